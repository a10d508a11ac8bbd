"""Write a run's model as a Hugging Face GPT-2 folder, for use anywhere transformers runs
(`nanogpt-export`: nanogpt.cli.export).

    nanogpt-export run_dir=outputs/2026-11-25/17-03-11 out=exported/shakespeare
    nanogpt-export run_dir=... out=... checkpoint=last overwrite=true

    >>> from transformers import GPT2LMHeadModel, AutoTokenizer
    >>> model = GPT2LMHeadModel.from_pretrained("exported/shakespeare")
    >>> tokenizer = AutoTokenizer.from_pretrained("exported/shakespeare")

The folder holds config.json, model.safetensors, the tokenizer's own files and
nanogpt_tokenizer.json (which tokenizer the model was trained on). A GPT-2 BPE run gets GPT-2's
vocab.json and merges.txt, which transformers' GPT-2 tokenizer reads; every other run (a BPE of
its own, a tokenizer.json, characters) gets tokenizer.json and tokenizer_config.json, which
AutoTokenizer loads as a fast tokenizer. The folder loads back with
`init_from=hf:<folder>`. Every model this project trains is a GPT-2 in transformers' terms: a
model without biases gets zero biases, which compute the same, and the exact GELU is GPT-2's
activation_function "gelu". A padded vocabulary is cut back to the tokenizer's: the padding rows
are no tokens, and without them transformers can never sample one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from nanogpt.architecture import non_gpt2_options
from nanogpt.checkpoint import load_model
from nanogpt.data import CharTokenizer, GPT2Tokenizer, HFTokenizer, Tokenizer, load_tokenizer
from nanogpt.errors import ConfigError
from nanogpt.huggingface.layout import ACTIVATION_FUNCTIONS, CONV1D_WEIGHTS
from nanogpt.model import GPT, LayerNorm

# What an export writes: every file that a folder holds, whatever the tokenizer. The last is ours
# alone, so a folder that holds it (and nothing outside this list) is an earlier export.
EXPORT_FILES = frozenset(
    {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "nanogpt_tokenizer.json"}
)
EXPORT_MARKER = "nanogpt_tokenizer.json"


def export(run_dir: str | Path, which: str, out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the model of run_dir's `which` checkpoint (best, falling back to last) into the
    folder out_dir, replacing an earlier export only with overwrite; returns the checkpoint's path
    and the folder."""
    out = Path(out_dir).expanduser()
    check_out(Path(run_dir), out, str(out_dir), overwrite)
    model, meta, path = load_model(Path(run_dir), which, "cpu")
    if model.config.gelu_approximate not in ACTIVATION_FUNCTIONS:
        raise ConfigError(
            f"{path}: model.gelu_approximate={model.config.gelu_approximate!r} has no GPT-2 equivalent, so this model cannot be exported"
        )
    if different := non_gpt2_options(model.config):
        key, value = next(iter(different.items()))
        raise ConfigError(f"{path}: model.{key}={value!r} has no GPT-2 equivalent, so this model cannot be exported")
    tokenizer = load_tokenizer(meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep the folder from anyone the model is shared with
    try:
        save_file(hf_tensors(model, tokenizer.vocab_size), staging / "model.safetensors", metadata={"format": "pt"})
        (staging / "model.safetensors").chmod(0o644)
        eot = getattr(tokenizer, "eot_token", None)
        _write_json(staging / "config.json", hf_config(model, tokenizer.vocab_size, eot))
        write_tokenizer(tokenizer, meta, staging, model.config.block_size)
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path, out


def hf_tensors(model: GPT, vocab_size: int) -> dict[str, torch.Tensor]:
    """The model's weights in GPT2LMHeadModel's names and layouts. The head is left out: it is
    the token embedding, which transformers ties back on load."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab_size]
        tensors[name] = (tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor).contiguous()
    for name, module in model.named_modules():
        if isinstance(module, (LayerNorm, torch.nn.Linear)) and module.bias is None and name != "lm_head":
            size = module.out_features if isinstance(module, torch.nn.Linear) else module.weight.numel()
            tensors[f"{name}.bias"] = torch.zeros(size)
    return tensors


def hf_config(model: GPT, vocab_size: int, eot_token: int | None) -> dict:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,
        "activation_function": ACTIVATION_FUNCTIONS[c.gelu_approximate],
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        # GPT-2 starts and ends texts with <|endoftext|>; a character vocabulary has no such token.
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
    }


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte in vocab.json and merges.txt: the printable
    Latin-1 characters stand for themselves, the other bytes (controls, space, ...) for the
    characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return [symbols[byte] for byte in range(256)]


def write_gpt2_vocab(tokenizer: GPT2Tokenizer, folder: Path) -> None:
    """vocab.json and merges.txt, derived from tiktoken's ranks (the files themselves are not
    shipped with tiktoken). A token's id is its rank, and the merge that made token t is found by
    running BPE on t's bytes with only the merges ranked below t: exactly two parts remain."""
    enc = tokenizer.encoding
    symbols = byte_symbols()
    token_bytes = [enc.decode_single_token_bytes(i) for i in range(tokenizer.eot_token)]
    ranks = {b: i for i, b in enumerate(token_bytes)}
    merges = []
    for rank, token in enumerate(token_bytes):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append(" ".join("".join(symbols[b] for b in part) for part in parts))
    vocab = {"".join(symbols[b] for b in token): i for i, token in enumerate(token_bytes)}
    vocab["<|endoftext|>"] = tokenizer.eot_token
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def write_tokenizer(tokenizer: Tokenizer, meta: dict, folder: Path, block_size: int) -> None:
    """The tokenizer's own files, which transformers' AutoTokenizer loads, and
    nanogpt_tokenizer.json, which says what the model was trained on (init_from=hf: checks it)."""
    info = {"tokenizer": meta["tokenizer"], "vocab_size": tokenizer.vocab_size}
    if isinstance(tokenizer, GPT2Tokenizer):
        info["tiktoken_encoding"] = tokenizer.encoding.name
        write_gpt2_vocab(tokenizer, folder)
        _write_json(folder / "nanogpt_tokenizer.json", info)
        return
    if isinstance(tokenizer, CharTokenizer):
        info["itos"] = tokenizer.itos
        hf, eot_name = char_tokenizer_json(tokenizer), None
    else:
        assert isinstance(tokenizer, HFTokenizer)
        info["tokenizer_sha256"] = tokenizer.sha256
        hf, eot_name = tokenizer.json, tokenizer.eot_name
    (folder / "tokenizer.json").write_text(hf, encoding="utf-8")
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size, "clean_up_tokenization_spaces": False}
    if eot_name is not None:
        config.update(bos_token=eot_name, eos_token=eot_name)
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(folder / "nanogpt_tokenizer.json", info)


def char_tokenizer_json(tokenizer: CharTokenizer) -> str:
    """A character vocabulary as a Hugging Face tokenizer: every character its own piece, looked
    up in the vocabulary (a character outside it becomes the first one), decoded by joining."""
    import tokenizers

    model = tokenizers.models.WordLevel(dict(tokenizer.stoi), unk_token=tokenizer.itos[0])
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = tokenizers.decoders.Fuse()
    return hf.to_str()


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def check_out(run_dir: Path, out: Path, given: str, overwrite: bool) -> None:
    """Refuse an out that an export must not write to: the run folder or a folder holding it, and,
    where out is not empty, anything but an earlier export (which overwrite=true replaces). Never
    is a folder deleted that an export did not write."""
    if run_dir.exists() and out.exists():
        if out.resolve() == run_dir.resolve():
            raise ConfigError(f"out={given!r} is the run folder, whose checkpoints the export reads; choose another out")
        if out.resolve() in run_dir.resolve().parents:
            raise ConfigError(f"out={given!r} holds the run folder {run_dir}; choose another out")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"out={given!r} is a file; choose a new or empty folder")
    if not overwrite:
        raise ConfigError(f"out={given!r} exists and is not an empty folder; choose another out, or pass overwrite=true")
    names = {path.name for path in out.iterdir()}
    foreign = sorted(names - EXPORT_FILES)
    if foreign or EXPORT_MARKER not in names:
        example = f" (it holds {foreign[0]})" if foreign else f" (it has no {EXPORT_MARKER})"
        raise ConfigError(
            f"out={given!r} is not an earlier export{example}: overwrite=true replaces only a folder that an export wrote; choose another out"
        )


def _replace_folder(staging: Path, out: Path) -> None:
    """Move the finished folder into place; an old one (overwrite=true) goes only once the new
    one is complete, so an interrupted export leaves the old folder or the new, never a mix."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)
