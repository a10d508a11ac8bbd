import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from nanogpt.config import ConfigError, validate_train
from nanogpt.config.resume import resumed_config
from tests.conftest import ROOT

CONF = ROOT / "conf"


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_bare_default_is_the_cpu_quickstart():
    cfg = compose_train()
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.dropout) == (4, 4, 128, 0.0)
    assert (cfg.dataset.name, cfg.dataset.block_size, cfg.dataset.batch_size, cfg.max_iters) == ("shakespeare_char", 64, 12, 2000)
    validate_train(cfg)


@pytest.mark.parametrize("group", ["model", "dataset", "optimizer", "system", "logger", "experiment"])
def test_every_option_composes_and_validates(group):
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        cfg = compose_train(f"{group}={option}")
        OmegaConf.resolve(cfg)
        validate_train(cfg)


def test_model_shapes():
    shapes = {
        name: (compose_train(f"model={name}").model.n_layer, compose_train(f"model={name}").model.n_head, compose_train(f"model={name}").model.n_embd)
        for name in options("model")
    }
    assert shapes == {
        "mini": (4, 4, 128),
        "small": (6, 6, 384),
        "gpt2": (12, 12, 768),
        "gpt2-medium": (24, 16, 1024),
        "gpt2-large": (36, 20, 1280),
        "gpt2-xl": (48, 25, 1600),
    }


def test_experiment_shakespeare_char_matches_nanogpt():
    cfg = compose_train("experiment=shakespeare_char")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.dropout) == (6, 6, 384, 0.2)
    assert (cfg.dataset.block_size, cfg.dataset.batch_size) == (256, 64)
    assert (cfg.optimizer.learning_rate, cfg.optimizer.min_lr, cfg.optimizer.beta2, cfg.optimizer.warmup_iters) == (1e-3, 1e-4, 0.99, 100)
    assert (cfg.max_iters, cfg.eval_interval, cfg.eval_iters, cfg.gradient_accumulation_steps) == (5000, 250, 200, 1)


def test_experiment_cpu_run_matches_nanogpt_readme():
    cfg = compose_train("experiment=shakespeare_char_cpu")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.dropout) == (4, 4, 128, 0.0)
    assert (cfg.dataset.block_size, cfg.dataset.batch_size, cfg.max_iters, cfg.eval_iters) == (64, 12, 2000, 20)
    assert cfg.system.device == "cpu"


def test_typo_in_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="learnig_rate") as err:
        compose_train("optimizer.learnig_rate=1e-3")
    assert "Key 'learnig_rate' not in 'OptimizerConfig'" in str(err.value.__cause__)


def test_wrong_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("model.n_layer=abc")
    assert isinstance(err.value.__cause__, ValidationError) and "n_layer" in str(err.value.__cause__)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.n_embd=130", "model.n_embd=130 is invalid: must be divisible by model.n_head=4"),
        ("model.n_layer=0", "model.n_layer=0 is invalid: must be a positive integer"),
        ("model.dropout=1.0", "model.dropout=1.0 is invalid: must be in [0, 1)"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0 is invalid: must be > 0"),
        ("optimizer.learning_rate=-1e-3", "optimizer.learning_rate=-0.001 is invalid"),
        ("dataset.block_size=-4", "dataset.block_size=-4 is invalid"),
        ("dataset.batch_size=0", "dataset.batch_size=0 is invalid"),
        ("system.device=tpu", "system.device='tpu' is invalid: must be one of auto, cpu, cuda, cuda:N, mps"),
        ("eval_iters=0", "eval_iters=0 is invalid"),
        ("init_from=gpt3", "init_from='gpt3' is invalid"),
    ],
)
def test_bad_values_get_one_line_naming_key_value_rule(override, message):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        validate_train(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "key, choices",
    [
        ("model.position", "learned, rope"),
        ("model.norm", "layernorm, rmsnorm"),
        ("model.activation", "gelu, relu2"),
        ("model.gelu_approximate", "none, tanh"),
        ("optimizer.name", "adamw, muon"),
        ("system.dtype", "auto, float32, bfloat16, float16"),
        ("system.strategy", "ddp, fsdp"),
        ("wandb.mode", "online, offline, disabled"),
    ],
)
def test_a_value_outside_a_keys_choices_is_refused_while_composing(key, choices):
    """Each choice key is a Choice: the config cannot even be composed with another value, and
    OmegaConf's refusal lists the choices (nanogpt.cli.refusals turns it into one line)."""
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(f"{key}=float8")
    cause = err.value.__cause__
    assert isinstance(cause, ValidationError) and f"expected one of [{choices}]" in str(cause), cause
    assert compose_train(f"{key}={choices.split(', ')[-1]}")  # each listed choice composes


def test_sample_and_prepare_configs_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sample = compose(config_name="sample", overrides=["run_dir=x", "top_k=null"])
        prepare = compose(config_name="prepare")
    assert sample.run_dir == "x" and sample.top_k is None and sample.checkpoint == "best"
    assert prepare.dataset.name == "shakespeare_char" and prepare.force is False


def test_every_yaml_file_extends_a_schema():
    for path in CONF.rglob("*.yaml"):
        if path.parent.name in ("experiment", "logger", "launcher", "hparams_search"):
            continue  # global-package presets: they set keys of the schema-backed groups or Hydra's
        text = path.read_text()
        assert "_schema" in text, f"{path} does not extend a schema"


def test_experiment_finetune_shakespeare_matches_nanogpt():
    cfg = compose_train("experiment=finetune_shakespeare")
    assert (cfg.init_from, cfg.dataset.name, cfg.dataset.tokenizer, cfg.dataset.block_size, cfg.dataset.batch_size) == (
        "gpt2-xl",
        "shakespeare",
        "gpt2",
        1024,
        1,
    )
    assert (cfg.gradient_accumulation_steps, cfg.max_iters, cfg.eval_interval, cfg.eval_iters) == (32, 20, 5, 40)
    assert (cfg.optimizer.learning_rate, cfg.optimizer.decay_lr, cfg.always_save_checkpoint) == (3e-5, False, False)
    cpu = compose_train("experiment=finetune_shakespeare_cpu")
    assert (cpu.init_from, cpu.system.device, cpu.optimizer.learning_rate, cpu.optimizer.decay_lr) == ("gpt2", "cpu", 3e-5, False)


@pytest.mark.parametrize("size", ["", "_medium", "_large", "_xl"])
def test_experiment_eval_gpt2_matches_nanogpt(size):
    cfg = compose_train(f"experiment=eval_gpt2{size}")
    assert cfg.init_from == "gpt2" + size.replace("_", "-") and cfg.eval_only
    assert (cfg.dataset.name, cfg.dataset.batch_size, cfg.dataset.block_size, cfg.eval_iters) == ("openwebtext", 8, 1024, 500)


def test_gpt2_presets_use_gpt2s_gelu():
    assert {compose_train(f"model={name}").model.gelu_approximate for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")} == {"tanh"}
    assert compose_train().model.gelu_approximate == "none"


@pytest.mark.parametrize(
    "override, message",
    [
        ("init_from=hf:", "init_from='hf:' is invalid"),
        ("dataset.vocab_size=0", "dataset.vocab_size=0 is invalid: must be a positive integer or null"),
        ("model.vocab_size=0", "model.vocab_size=0 is invalid"),
    ],
)
def test_bad_gpt2_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_train(compose_train(override))


def test_pretrained_names_and_local_folders_are_valid_init_from():
    for init_from in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "hf:/some/folder"):
        validate_train(compose_train(f"init_from={init_from}"))


def test_export_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="export", overrides=["run_dir=r", "out=o"])
    assert (cfg.run_dir, cfg.out, cfg.checkpoint, cfg.overwrite) == ("r", "o", "best", False)


def test_resuming_a_checkpoint_written_before_the_gpt2_keys():
    """Keys added since take their defaults: the exact GELU, the dataset's vocabulary and
    tokenizer, which is what the older code used."""
    saved = OmegaConf.create(OmegaConf.to_container(compose_train("model.n_layer=2")))
    for group, key in (("model", "gelu_approximate"), ("model", "vocab_size"), ("dataset", "tokenizer")):
        saved[group].pop(key)
    cfg = resumed_config(saved, compose_train("init_from=resume", "run_dir=x", "max_iters=9"), ["init_from", "run_dir", "max_iters"])
    assert (cfg.model.n_layer, cfg.model.gelu_approximate, cfg.model.vocab_size, cfg.dataset.tokenizer, cfg.max_iters) == (2, "none", None, "char", 9)
    validate_train(cfg)
