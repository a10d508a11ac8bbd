"""Start from GPT-2 weights in the Hugging Face format: OpenAI's (`init_from=gpt2`, ...,
`gpt2-xl`, downloaded from the hub) or any local GPT-2 folder (`init_from=hf:<folder>`).

    python -m nanogpt.train experiment=finetune_shakespeare                  # gpt2-xl on tiny Shakespeare
    python -m nanogpt.train init_from=gpt2 dataset=shakespeare eval_only=true
    python -m nanogpt.train init_from=hf:/path/to/exported dataset=shakespeare

A GPT-2 folder is what `GPT2LMHeadModel.save_pretrained` writes: config.json plus
model.safetensors (or pytorch_model.bin). Reading it needs `safetensors` and, for the hub,
`huggingface_hub`; `transformers` is not needed. Our module names are GPT-2's, so the only
translation is the layout of four matrices: GPT-2 stores them as Conv1D weights, (in, out),
where nn.Linear holds (out, in) (nanogpt.huggingface.layout).
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig
from safetensors import SafetensorError
from safetensors.torch import load_file

from nanogpt.architecture import GPT2_OPTIONS
from nanogpt.config import PRETRAINED_REPOS
from nanogpt.data import GPT2_VOCAB_SIZE, same_tokenizer
from nanogpt.data.hub import hub_unreachable
from nanogpt.errors import CheckpointError, ConfigError, first_line
from nanogpt.huggingface.layout import CONV1D_WEIGHTS, GELUS
from nanogpt.model import GPT, GPTConfig

log = logging.getLogger(__name__)

# The files of a hub repo that init_from reads; both land in one snapshot folder of the cache.
HUB_FILES = ("config.json", "model.safetensors")


def load_pretrained(cfg: DictConfig, overridden: list[str], meta: dict) -> dict[str, torch.Tensor]:
    """The state dict (our names, position embeddings cropped to dataset.block_size) of the weights
    that cfg.init_from names. cfg.model takes their architecture; a key the user set on the command
    line to another value is refused, as are a dataset and weights with different tokenizers."""
    folder = _folder(cfg.init_from)
    arch, n_positions = read_config(folder, cfg.init_from)
    for key, value in arch.items():
        chosen = f"model.{key}" in overridden or "model" in overridden
        if chosen and cfg.model[key] is not None and cfg.model[key] != value:
            raise ConfigError(
                f"model.{key}={cfg.model[key]!r} conflicts with init_from={cfg.init_from}, whose weights have "
                f"{key}={value!r}; drop the override (the architecture comes from the weights)"
            )
        cfg.model[key] = value
    for key, value in GPT2_OPTIONS.items():
        if cfg.model.get(key, value) != value:
            raise ConfigError(
                f"model.{key}={cfg.model[key]!r} is invalid with init_from={cfg.init_from}: GPT-2's weights need "
                f"model.{key}={value!r}; drop the override"
            )
    if cfg.dataset.block_size > n_positions:
        raise ConfigError(
            f"dataset.block_size={cfg.dataset.block_size} is invalid with init_from={cfg.init_from}: its weights "
            f"have {n_positions} positions; use dataset.block_size={n_positions} or less"
        )
    _check_tokenizer(cfg.init_from, folder, arch["vocab_size"], meta)
    state = _read_weights(folder, cfg.init_from)
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][: cfg.dataset.block_size]
    _check_names_and_shapes(state, GPTConfig(block_size=cfg.dataset.block_size, **arch), cfg.init_from)
    log.info(
        "loaded %s weights: %d layers, %d heads, %d wide, vocabulary %d",
        cfg.init_from,
        arch["n_layer"],
        arch["n_head"],
        arch["n_embd"],
        arch["vocab_size"],
    )
    return state


def _folder(init_from: str) -> Path:
    """The local folder of init_from: hf:<folder> as it is, a GPT-2 name from the hub's cache
    (downloaded there first if needed)."""
    if init_from.startswith("hf:"):
        folder = Path(init_from[3:]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"init_from={init_from}: no such folder (give a folder that GPT2LMHeadModel.save_pretrained wrote)")
        return folder
    return _hub_folder(init_from)


def _hub_folder(init_from: str) -> Path:
    """The snapshot folder in the Hugging Face cache that holds OpenAI's weights for init_from:
    read from the cache when both files are there, else downloaded. Without a network this fails
    within seconds, instead of after huggingface_hub's retries (about 25 s)."""
    import huggingface_hub  # here: only hub names need it, and it takes a moment to import
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    # huggingface_hub gives its logger a stderr handler of its own and also passes each record
    # on to the root logger, which prints it again: keep only ours (console and train.log).
    logging.getLogger("huggingface_hub").handlers.clear()
    repo = PRETRAINED_REPOS[init_from]
    not_cached = f"init_from={init_from}: OpenAI's GPT-2 weights ({repo}) are not in the Hugging Face cache"
    local_copy = "download the folder and pass init_from=hf:<folder>"
    if not constants.HF_HUB_OFFLINE:
        cached = [huggingface_hub.try_to_load_from_cache(repo, filename) for filename in HUB_FILES]
        if all(isinstance(path, str) for path in cached):
            return Path(cached[0]).parent
        reason = hub_unreachable(huggingface_hub.hf_hub_url(repo, HUB_FILES[0]))
        if reason is not None:
            host = urlparse(constants.ENDPOINT).netloc
            raise CheckpointError(f"{not_cached} and {host} cannot be reached ({reason}); connect once, or {local_copy}")
    try:
        for filename in HUB_FILES:
            path = Path(huggingface_hub.hf_hub_download(repo, filename))
    except (EntryNotFoundError, HfHubHTTPError, OSError) as exc:
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(
                f"{not_cached}, and HF_HUB_OFFLINE=1 forbids downloading them; unset it and connect once, or {local_copy}"
            ) from None
        raise CheckpointError(f"{not_cached} and downloading them failed ({first_line(exc)}); connect once, or {local_copy}") from None
    return path.parent


def read_config(folder: Path, init_from: str) -> tuple[dict[str, Any], int]:
    """The architecture (our model keys) and the number of positions in a GPT-2 config.json;
    anything our model cannot reproduce exactly is refused, naming the config key."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"init_from={init_from}: {folder} is not a GPT-2 folder: it has no config.json") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ConfigError(f"init_from={init_from}: {path} describes model_type={found!r}; only GPT-2 ('gpt2') folders can be loaded")
    n_embd = config.get("n_embd")
    requirements = {
        # key: (value GPT-2 has, whether the config's value is acceptable)
        "activation_function": ("gelu_new", config.get("activation_function", "gelu_new") in GELUS),
        "n_inner": ("null or 4 * n_embd", config.get("n_inner") in (None, 4 * n_embd if n_embd else None)),
        "layer_norm_epsilon": (1e-5, config.get("layer_norm_epsilon", 1e-5) == 1e-5),
        "scale_attn_weights": (True, config.get("scale_attn_weights", True) is True),
        "scale_attn_by_inverse_layer_idx": (False, config.get("scale_attn_by_inverse_layer_idx", False) is False),
        "tie_word_embeddings": (True, config.get("tie_word_embeddings", True) is True),
    }
    for key, (expected, ok) in requirements.items():
        if not ok:
            raise ConfigError(f"init_from={init_from}: {path} has {key}={config.get(key)!r}, which this model cannot reproduce (it needs {expected})")
    try:
        arch = {
            "n_layer": int(config["n_layer"]),
            "n_head": int(config["n_head"]),
            "n_embd": int(config["n_embd"]),
            "bias": True,  # GPT-2 always has biases
            "gelu_approximate": GELUS[config.get("activation_function", "gelu_new")],
            "vocab_size": int(config["vocab_size"]),
        }
        return arch, int(config["n_positions"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"init_from={init_from}: {path} lacks a valid {exc.args[0] if isinstance(exc, KeyError) else 'size'} entry") from None


def _check_tokenizer(init_from: str, folder: Path, vocab_size: int, meta: dict) -> None:
    """Weights and data must speak the same tokens: GPT-2 BPE ids fed to a character model (or
    the reverse) train without error and learn nothing. A folder that nanogpt.export wrote names its
    tokenizer (nanogpt_tokenizer.json); any other GPT-2 folder is taken to read GPT-2 BPE when it has
    GPT-2's 50,257 tokens."""
    data = f"dataset {meta['dataset']} is tokenized with {meta['tokenizer']} ({meta['vocab_size']:,} tokens)"
    exported = folder / "nanogpt_tokenizer.json"
    if exported.is_file():
        try:
            theirs = json.loads(exported.read_text(encoding="utf-8"))
            theirs["tokenizer"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"init_from={init_from}: {exported} is not a readable tokenizer description") from None
        if not same_tokenizer(theirs, meta):
            raise ConfigError(
                f"init_from={init_from} was trained on {theirs['tokenizer']} tokens ({theirs.get('vocab_size', '?'):,}) "
                f"but {data}; use a dataset prepared with the same tokenizer"
            )
        return
    bpe_weights = vocab_size >= GPT2_VOCAB_SIZE
    if bpe_weights != (meta["tokenizer"] == "gpt2") or vocab_size < meta["vocab_size"]:
        if bpe_weights:
            raise ConfigError(
                f"init_from={init_from} reads GPT-2 BPE tokens, but {data}; use a GPT-2 BPE dataset "
                f"(dataset=shakespeare, dataset=openwebtext, or your text with dataset.tokenizer=gpt2)"
            )
        raise ConfigError(f"init_from={init_from} reads {vocab_size} tokens, not GPT-2 BPE, but {data}; use the dataset it was trained on")


def _read_weights(folder: Path, init_from: str) -> dict[str, torch.Tensor]:
    """The folder's tensors in our names: model.safetensors (or the shards that
    model.safetensors.index.json lists, as save_pretrained writes for large models), else
    pytorch_model.bin (loaded with weights_only=True, so it cannot run code)."""
    safetensors_path, index_path, bin_path = folder / "model.safetensors", folder / "model.safetensors.index.json", folder / "pytorch_model.bin"
    if safetensors_path.is_file() or index_path.is_file():
        try:
            shards = (
                [safetensors_path]
                if safetensors_path.is_file()
                else sorted({folder / f for f in json.loads(index_path.read_text())["weight_map"].values()})
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index_path}: unreadable ({exc.__class__.__name__})") from None
        raw = {}
        for path in shards:
            try:
                raw.update(load_file(path))
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({exc})") from None
    elif bin_path.is_file():
        path = bin_path
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable or holds more than tensors ({exc.__class__.__name__})") from None
    else:
        raise ConfigError(f"init_from={init_from}: {folder} is not a GPT-2 folder: it has neither model.safetensors nor pytorch_model.bin")
    state = {}
    for name, tensor in raw.items():
        # A GPT2Model saves "h.0...", a GPT2LMHeadModel "transformer.h.0..."; both occur on the hub.
        name = name.removeprefix("transformer.")
        # Causal-mask buffers of older transformers versions, and the head that is the tied
        # token embedding: our model rebuilds both.
        if name.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"]) or name == "lm_head.weight":
            continue
        state[f"transformer.{name}"] = tensor.t().contiguous() if name.endswith(CONV1D_WEIGHTS) else tensor
    state["lm_head.weight"] = state.get("transformer.wte.weight")
    return state


def _check_names_and_shapes(state: dict[str, torch.Tensor], config: GPTConfig, init_from: str) -> None:
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    for name, tensor in expected.items():
        if state.get(name) is None:
            raise CheckpointError(f"init_from={init_from}: the weights lack {name} (not a complete GPT-2 model)")
        if state[name].shape != tensor.shape:
            raise CheckpointError(f"init_from={init_from}: {name} has shape {tuple(state[name].shape)}, config.json implies {tuple(tensor.shape)}")
    unexpected = sorted(state.keys() - expected.keys())
    if unexpected:
        raise CheckpointError(f"init_from={init_from}: unexpected tensor {unexpected[0]} in the weights (not a GPT-2 model)")
