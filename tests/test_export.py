"""Export to the Hugging Face GPT-2 format: transformers loads the folder and computes our logits."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from nanogpt.checkpoint import CKPT_FORMAT, CheckpointError, checkpoint_path, save_checkpoint
from nanogpt.cli.export import export
from nanogpt.config import ConfigError
from nanogpt.huggingface.pretrained import load_pretrained
from nanogpt.model import GPT, GPTConfig

CHAR_META = {"tokenizer": "char", "vocab_size": 65, "itos": [chr(32 + i) for i in range(65)], "dataset": "chars"}
GPT2_META = {"tokenizer": "gpt2", "vocab_size": 50257, "dataset": "shakespeare"}


def make_run(run_dir, meta, **model_args) -> GPT:
    """A run folder whose checkpoint holds a random model, its biases random too."""
    torch.manual_seed(0)
    args = dict(vocab_size=meta["vocab_size"], block_size=32, n_layer=2, n_head=2, n_embd=32, bias=False, gelu_approximate="none")
    args.update(model_args)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": args, "dataset_meta": json.dumps(meta)}
    save_checkpoint(checkpoint_path(run_dir, "best"), state)
    return model.eval()


def export_cfg(run_dir, out, **more):
    return OmegaConf.create({"run_dir": str(run_dir), "out": str(out), "checkpoint": "best", "overwrite": False, **more})


def hf_logits(folder, idx):
    from transformers import GPT2LMHeadModel

    with torch.no_grad():
        return GPT2LMHeadModel.from_pretrained(folder).eval()(idx).logits


@pytest.mark.parametrize(
    "meta, model_args",
    [
        (CHAR_META, dict(bias=False, gelu_approximate="none")),  # nanoGPT's from-scratch shape
        (CHAR_META, dict(bias=True, gelu_approximate="tanh")),
        (GPT2_META, dict(vocab_size=50304, bias=False)),  # padded GPT-2 vocabulary, cut back on export
    ],
)
def test_round_trip_through_transformers(tmp_path, meta, model_args):
    model = make_run(tmp_path / "run", meta, **model_args)
    out = export(export_cfg(tmp_path / "run", tmp_path / "hf"))
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == meta["vocab_size"] and config["n_positions"] == 32
    idx = torch.randint(0, meta["vocab_size"], (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx, idx)[0][..., : meta["vocab_size"]]
    diff = (hf_logits(out, idx) - ours).abs().max().item()
    assert diff < 1e-5, diff
    # ... and the folder loads back with init_from=hf:<folder>, to the same logits.
    cfg = OmegaConf.create(
        {
            "init_from": f"hf:{out}",
            "dataset": {"block_size": 32},
            "model": {k: None for k in ("n_layer", "n_head", "n_embd", "bias", "gelu_approximate", "vocab_size")},
        }
    )
    state = load_pretrained(cfg, [], meta)
    again = GPT(GPTConfig(block_size=32, dropout=0.0, **cfg.model))
    again.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(again.eval()(idx, idx)[0], ours, atol=1e-6)
    assert json.loads((out / "nanogpt_tokenizer.json").read_text())["tokenizer"] == meta["tokenizer"]


def test_gpt2_tokenizer_files_load_in_transformers(tmp_path, shakespeare_path):
    from transformers import AutoTokenizer

    from nanogpt.data import GPT2Tokenizer

    make_run(tmp_path / "run", GPT2_META, bias=True)
    out = export(export_cfg(tmp_path / "run", tmp_path / "hf"))
    theirs = AutoTokenizer.from_pretrained(out)
    text = shakespeare_path.read_text()[:20_000] + " naïve café — 日本語 🙂\n\n\ttabs  and  spaces"
    assert theirs.encode(text) == GPT2Tokenizer().encode(text)
    assert theirs.eos_token_id == 50256


def test_existing_out_is_kept_unless_overwrite_and_an_earlier_export(tmp_path):
    make_run(tmp_path / "run", CHAR_META)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not an empty folder; choose another out, or pass overwrite=true"):
        export(export_cfg(tmp_path / "run", out))
    with pytest.raises(ConfigError, match="is not an earlier export \\(it holds keep.txt\\)"):
        export(export_cfg(tmp_path / "run", out, overwrite=True))  # overwrite replaces only an export
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    export(export_cfg(tmp_path / "run", out))
    export(export_cfg(tmp_path / "run", out, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "nanogpt_tokenizer.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # no staging folder left


def test_bad_export_input(tmp_path):
    no_out = export_cfg(tmp_path, tmp_path / "x")
    no_out.out = None
    with pytest.raises(ConfigError, match="out is required"):
        export(no_out)
    with pytest.raises(CheckpointError, match="no such folder"):
        export(export_cfg(tmp_path / "nope", tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_a_character_tokenizer_exports_as_a_tokenizer_transformers_loads(tmp_path, shakespeare_path):
    from transformers import AutoTokenizer

    from nanogpt.data import CharTokenizer

    text = shakespeare_path.read_text()[:5000]
    chars = sorted(set(text))
    make_run(tmp_path / "run", {"tokenizer": "char", "vocab_size": len(chars), "itos": chars, "dataset": "chars"})
    out = export(export_cfg(tmp_path / "run", tmp_path / "hf"))
    theirs = AutoTokenizer.from_pretrained(out)
    ids = theirs(text, add_special_tokens=False)["input_ids"]
    assert ids == CharTokenizer(chars).encode(text) and len(theirs) == len(chars)
    assert theirs.decode(ids) == text


@pytest.mark.parametrize(
    "key, value", [("position", "rope"), ("norm", "rmsnorm"), ("qk_norm", True), ("activation", "relu2"), ("tie_embeddings", False)]
)
def test_a_model_with_a_non_gpt2_option_is_refused_and_nothing_is_written(tmp_path, key, value):
    make_run(tmp_path / "run", CHAR_META, **{key: value})
    with pytest.raises(ConfigError) as refused:
        export(export_cfg(tmp_path / "run", tmp_path / "hf"))
    path = checkpoint_path(tmp_path / "run", "best")
    assert str(refused.value) == f"{path}: model.{key}={value!r} has no GPT-2 equivalent, so this model cannot be exported"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no out folder, no staging folder
