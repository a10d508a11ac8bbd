"""Loading GPT-2 weights in the Hugging Face format: our logits equal transformers' to 1e-5."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

from nanogpt.checkpoint import CheckpointError
from nanogpt.config import ConfigError
from nanogpt.huggingface.pretrained import load_pretrained
from nanogpt.model import GPT, GPTConfig
from tests.conftest import ROOT, TINY, make_gpt2_folder, one_line_error, run_cli

GPT2_META = {"tokenizer": "gpt2", "vocab_size": 50257, "dataset": "shakespeare"}


def config(init_from: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"init_from={init_from}", "dataset=shakespeare", "dataset.block_size=64", *overrides])


def our_model(init_from: str, *overrides: str, meta: dict = GPT2_META, overridden: tuple[str, ...] = ()) -> GPT:
    cfg = config(init_from, *overrides)
    state = load_pretrained(cfg, list(overridden), meta)
    model = GPT(GPTConfig(block_size=cfg.dataset.block_size, **cfg.model))
    model.load_state_dict(state)
    return model.eval()


def transformers_logits(folder, idx: torch.Tensor) -> torch.Tensor:
    from transformers import GPT2LMHeadModel

    with torch.no_grad():
        return GPT2LMHeadModel.from_pretrained(folder).eval()(idx).logits


def our_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx, torch.zeros_like(idx))[0]


def hub_layout(folder, target):
    """The layout of OpenAI's files on the hub: GPT2Model names (no "transformer." prefix), no
    head, and the causal-mask buffers that older transformers versions saved."""
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    state = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items() if k != "lm_head.weight"}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    save_file(state, target / "model.safetensors")
    return target


def pytorch_bin_layout(folder, target):
    """An older save_pretrained: pytorch_model.bin, a pickled state dict with the head."""
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["transformer.wte.weight"]
    torch.save(state, target / "pytorch_model.bin")
    return target


def sharded_layout(folder, target):
    """What save_pretrained writes for a large model: shards and an index of them."""
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    weight_map = {}
    for i, names in enumerate((sorted(state)[::2], sorted(state)[1::2])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: state[n] for n in names}, target / shard)
        weight_map.update({n: shard for n in names})
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return target


LAYOUTS = {"save_pretrained": None, "hub": hub_layout, "pytorch_model.bin": pytorch_bin_layout, "sharded": sharded_layout}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_logits_equal_transformers(gpt2_folder, tmp_path, layout):
    folder = LAYOUTS[layout](gpt2_folder, tmp_path / "layout") if LAYOUTS[layout] else gpt2_folder
    model = our_model(f"hf:{folder}")
    assert model.config.gelu_approximate == "tanh" and model.config.bias and model.config.vocab_size == 50257
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    diff = (our_logits(model, idx) - transformers_logits(gpt2_folder, idx)).abs().max().item()
    assert diff < 1e-5, diff


def test_exact_gelu_weights_and_a_cropped_context(tmp_path):
    folder = make_gpt2_folder(tmp_path / "exact", seed=1, activation_function="gelu", vocab_size=300, n_positions=48)
    meta = {"tokenizer": "char", "vocab_size": 80, "dataset": "mine"}
    model = our_model(f"hf:{folder}", "dataset.block_size=16", meta=meta)
    assert model.config.gelu_approximate == "none" and model.transformer.wpe.weight.shape == (16, 32)
    idx = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    assert (our_logits(model, idx) - transformers_logits(folder, idx)).abs().max().item() < 1e-5


def test_hub_names_download_from_openai_community(gpt2_folder, monkeypatch):
    import huggingface_hub

    requested = []

    def fake_download(repo_id, filename):
        requested.append((repo_id, filename))
        return str(gpt2_folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    our_model("gpt2-medium")  # the tiny folder stands in for the download
    assert requested == [("openai-community/gpt2-medium", "config.json"), ("openai-community/gpt2-medium", "model.safetensors")]


def edit_config(folder, target, **changes):
    target.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").symlink_to(folder / "model.safetensors")
    return target


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda f, t: t / "nowhere", ConfigError, "no such folder"),
        (lambda f, t: (t / "empty").mkdir() or t / "empty", ConfigError, "is not a GPT-2 folder: it has no config.json"),
        (lambda f, t: edit_config(f, t / "llama", model_type="llama"), ConfigError, "describes model_type='llama'; only GPT-2"),
        (
            lambda f, t: edit_config(f, t / "relu", activation_function="relu"),
            ConfigError,
            "has activation_function='relu', which this model cannot reproduce",
        ),
        (lambda f, t: edit_config(f, t / "deeper", n_layer=3), CheckpointError, "the weights lack transformer.h.2.ln_1.weight"),
        (
            lambda f, t: edit_config(f, t / "wider", n_embd=64),
            CheckpointError,
            "transformer.wte.weight has shape (50257, 32), config.json implies (50257, 64)",
        ),
    ],
)
def test_folders_that_are_not_gpt2_are_refused(gpt2_folder, tmp_path, make, error, message):
    folder = make(gpt2_folder, tmp_path)
    with pytest.raises(error) as err:
        our_model(f"hf:{folder}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_or_corrupt_weights(gpt2_folder, tmp_path):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "config.json").write_text((gpt2_folder / "config.json").read_text())
    with pytest.raises(ConfigError, match="has neither model.safetensors nor pytorch_model.bin"):
        our_model(f"hf:{folder}")
    (folder / "model.safetensors").write_bytes((gpt2_folder / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable, truncated or corrupt"):
        our_model(f"hf:{folder}")


def test_weights_decide_the_architecture_unless_overridden(gpt2_folder):
    # model=mini's keys (4 layers, no bias) give way to the weights' without a word ...
    assert our_model(f"hf:{gpt2_folder}").config.n_layer == 2
    # ... but a key set on the command line must agree with them.
    with pytest.raises(ConfigError, match=r"model.n_layer=3 conflicts with init_from=hf:.*whose weights have n_layer=2; drop the override"):
        our_model(f"hf:{gpt2_folder}", "model.n_layer=3", overridden=("model.n_layer",))
    assert our_model(f"hf:{gpt2_folder}", "model.dropout=0.1", overridden=("model.dropout",)).config.dropout == 0.1


def test_context_longer_than_the_weights_and_wrong_tokenizer(gpt2_folder):
    with pytest.raises(ConfigError, match="dataset.block_size=128 is invalid with init_from=hf:.*its weights have 64 positions"):
        our_model(f"hf:{gpt2_folder}", "dataset.block_size=128")
    char_meta = {"tokenizer": "char", "vocab_size": 65, "dataset": "shakespeare_char"}
    with pytest.raises(ConfigError, match="reads GPT-2 BPE tokens, but dataset shakespeare_char is tokenized with char"):
        our_model(f"hf:{gpt2_folder}", meta=char_meta)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("init_from=gpt3",), "error: init_from='gpt3' is invalid: must be scratch, resume, gpt2, gpt2-medium, gpt2-large, gpt2-xl or hf:"),
        (
            ("init_from=gpt2",),
            "error: init_from=gpt2: OpenAI's GPT-2 weights (openai-community/gpt2) are not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids",
        ),
        (("init_from=hf:{folder}", "model.n_layer=3"), "error: model.n_layer=3 conflicts with init_from=hf:"),
    ],
)
def test_cli_bad_pretrained_input(gpt2_folder, bpe_data_dir, tmp_path, overrides, message):
    env = {"HF_HOME": str(tmp_path / "empty_hf_home")}  # nothing cached, and offline: no download
    overrides = [o.format(folder=gpt2_folder) for o in overrides]
    proc = run_cli(
        "nanogpt.train",
        *TINY,
        "dataset=shakespeare",
        f"dataset.data_dir={bpe_data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
        check=False,
        env=env,
    )
    assert one_line_error(proc).startswith(message)
    assert not (tmp_path / "run").exists()


class OpensAFile:
    """Unpickling this creates a file: what a malicious pytorch_model.bin would do (run code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_payload_in_pytorch_model_bin_is_refused_without_running_it(data_dir, tmp_path):
    folder, marker = tmp_path / "evil", tmp_path / "payload-ran"
    folder.mkdir()
    config = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 65}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"transformer.wte.weight": torch.zeros(65, 32), "h.0.attn.c_attn.weight": OpensAFile(marker)}, folder / "pytorch_model.bin")
    proc = run_cli("nanogpt.train", *TINY, f"init_from=hf:{folder}", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert not marker.exists()  # the payload never ran
    assert one_line_error(proc) == f"error: {folder / 'pytorch_model.bin'}: unreadable or holds more than tensors (UnpicklingError)"
    assert not (tmp_path / "run").exists()
