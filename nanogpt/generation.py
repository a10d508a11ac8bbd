"""Generate text from a trained GPT: temperature, top-k and top-p sampling, stop strings, streaming,
and a KV cache that makes generation fast while giving the tokens that the naive path gives.

    from nanogpt import Generator
    gen = Generator.from_run("outputs/2026-11-25/17-03-11")
    print(gen.generate("ROMEO:", max_new_tokens=200, temperature=0.8)[0])

    import nanogpt
    texts = nanogpt.generate("outputs/2026-11-25/17-03-11", prompt="ROMEO:", num_samples=2)

The naive path (kv_cache=False) is the reference: for every new token it reruns the model on the
context window. The KV-cache path feeds the model only the newest token and reuses the keys and
values of the earlier ones, which gives the same logits up to float rounding. Keys and values
depend on the positions in the window (GPT-2's position embeddings are learned and absolute), so a
cache serves a window only as long as the window keeps its start; when the window moves, the cache
is rebuilt from the window's tokens. Once the text outgrows the context:
- window="halve" (the default): a full window restarts from its newest half. The cache is rebuilt
  once every block_size/2 tokens, so generation stays fast at any length; tokens see between
  block_size/2 and block_size tokens of context.
- window="slide" (nanoGPT's sample.py): every token sees the last block_size tokens. The window
  moves at every token, so the cache is rebuilt at every token: the naive path's speed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from nanogpt import memory
from nanogpt.checkpoint import load_model
from nanogpt.config import SystemConfig, validate_generation, validate_system
from nanogpt.config.schemas import GREEDY_BELOW_TEMPERATURE
from nanogpt.data import Tokenizer, load_tokenizer
from nanogpt.errors import ConfigError, DataError, check_interrupted
from nanogpt.model import GPT, DecodeStep, KVCache
from nanogpt.system import System, resolve_system

# ----------------------------------------------------------------------------- tokens


def window_start(start: int, length: int, block_size: int, window: str) -> int:
    """Where the context window of a sequence of `length` tokens begins, given where it began
    for the previous token: it only moves once the sequence outgrows it."""
    if length - start <= block_size:
        return start
    if window == "slide":
        return length - block_size
    return length - (block_size - block_size // 2)  # halve, rounding up so a window keeps a token


class Decoder:
    """Next-token logits for a batch of growing sequences, each computed on its context window:
    by rerunning the model on the window (kv_cache=False, the reference) or with a KV cache.
    A decoder serves one generation: each call's idx extends the previous call's by one token."""

    def __init__(
        self,
        model: GPT,
        batch_size: int,
        kv_cache: bool = True,
        window: str = "halve",
        cache_dtype: torch.dtype | None = None,
        vocab_size: int | None = None,
    ):
        self.model = model
        self.window = window
        # Rows of a padded embedding beyond the tokenizer's vocabulary are no tokens: never pick them.
        self.vocab_size = vocab_size
        self.start = 0
        self.cache: KVCache | None = None
        if kv_cache:
            weight = model.lm_head.weight
            self.cache = KVCache(model.config, batch_size, weight.device, cache_dtype or weight.dtype)
            self.step = DecodeStep(model)
        self.cache_start = 0  # the cache holds the tokens [cache_start, cache_start + cache.length)

    def next_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 logits (batch, vocab) of the token that follows idx (batch, length)."""
        length = idx.size(1)
        self.start = window_start(self.start, length, self.model.config.block_size, self.window)
        if self.cache is None:
            logits, _ = self.model(idx[:, self.start :])
        elif self.cache_start == self.start and self.start + self.cache.length == length - 1:
            # The cache holds this window up to the previous token: only the newest one is new.
            logits = self.step(idx[:, -1:], self.cache)
        else:
            # A new window (the prompt's, or one that moved): its keys and values are all new.
            self.cache.reset()
            logits, _ = self.model(idx[:, self.start :], kv_cache=self.cache)
            self.cache_start = self.start
        return logits[:, -1, : self.vocab_size].float()


def pick_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token (batch, 1) of each row: the likeliest at temperature 0 (and below
    GREEDY_BELOW_TEMPERATURE, where dividing by it would overflow towards a one-hot softmax), else a
    draw from softmax(logits / temperature) restricted to the top_k likeliest tokens, then to the
    likeliest ones holding top_p of the probability (nucleus sampling)."""
    if temperature < GREEDY_BELOW_TEMPERATURE:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # A token goes once the likelier ones already hold top_p; the likeliest one always stays
        # (a top_p that rounds to 0 in float32 would otherwise drop it too).
        dropped = probs.cumsum(dim=-1) - probs >= top_p
        dropped[:, 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(dropped, float("-inf")))
    # The draw: the index of the largest probs / E, with E ~ Exponential(1) drawn for every token
    # (the Gumbel-max trick, exponentiated). That is how torch.multinomial draws one sample, so
    # these are its draws for the same generator; it first checks the probabilities (minimum,
    # maximum and sum, each read back to Python), which costs more than the draw itself.
    probs = logits.softmax(dim=-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)


@torch.inference_mode()
def sample_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    kv_cache: bool = True,
    window: str = "halve",
    cache_dtype: torch.dtype | None = None,
    vocab_size: int | None = None,
) -> Iterator[torch.Tensor]:
    """Extend every row of idx (batch, length) token by token, yielding each step's new tokens
    (batch, 1). Both paths draw from `generator` in the same order, so a seed gives one text."""
    decoder = Decoder(model, idx.size(0), kv_cache, window, cache_dtype, vocab_size)
    for _ in range(max_new_tokens):
        check_interrupted()  # a stop signal whose exception landed in a finalizer, and was lost
        next_token = pick_next(decoder.next_logits(idx), temperature, top_k, top_p, generator)
        idx = torch.cat((idx, next_token), dim=1)
        yield next_token


def generate_ids(model: GPT, idx: torch.Tensor, max_new_tokens: int, **options: Any) -> torch.Tensor:
    """idx (batch, length) with max_new_tokens tokens appended to every row; options as for sample_tokens."""
    return torch.cat([idx, *sample_tokens(model, idx, max_new_tokens, **options)], dim=1)


# ----------------------------------------------------------------------------- text


class Continuation:
    """The text generated for one sample, built token by token and cut at its first stop string."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.longest_stop = max(map(len, self.stop), default=0)
        self.text = ""
        self.done = False
        self.pending: list[int] = []  # tokens that end inside a character, waiting for its rest
        self.shown = 0  # how much of text take_final() has handed out

    def add(self, token: int) -> None:
        if self.done:
            return
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        if not piece.endswith("\ufffd"):
            self._append(piece)

    def finish(self) -> None:
        """No more tokens come: a character left incomplete stays as U+FFFD."""
        if self.pending and not self.done:
            self._append(self.tokenizer.decode(self.pending))
        self.done = True

    def _append(self, piece: str) -> None:
        self.pending = []
        # A stop string found now must end in the new piece: earlier ones were found earlier.
        search_from = max(0, len(self.text) - self.longest_stop + 1)
        self.text += piece
        hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.done = True

    def take_final(self) -> str:
        """The text that became final since the last call. A tail that could still grow into a
        stop string is held back, so streamed text never shows a stop string that gets cut."""
        end = len(self.text) if self.done else len(self.text) - self._stop_start()
        piece, self.shown = self.text[self.shown : end], end
        return piece

    def _stop_start(self) -> int:
        """The length of the longest tail of the text that is the beginning of a stop string."""
        for n in range(min(len(self.text), self.longest_stop - 1), 0, -1):
            if any(s.startswith(self.text[-n:]) for s in self.stop):
                return n
        return 0


def store_block_weights_in(model: GPT, dtype: torch.dtype) -> None:
    """Keep the transformer blocks' matmul weights in `dtype` (for inference under autocast to
    it). Autocast would cast the float32 weights at every use, to the same values; stored
    converted they take half the memory and half the bytes read per decoded token, which is
    what bounds decoding a single sequence (decode steps 1.7x faster on a 2-core AVX2 CPU). Embeddings, head and
    norms stay float32, so the residual stream stays float32 as under autocast alone."""
    for block in model.transformer.h:
        for module in block.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(dtype)


class Generator:
    """A model and its tokenizer, loaded once, ready to generate as often as asked (a notebook's
    loop, a sweep's evaluation)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, system: System | None = None, check_memory: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.system = system or System(device=str(model.lm_head.weight.device), dtype="float32", compile=False)
        self.check_memory = check_memory  # refuse a batch estimated to need more memory than the device has

    @classmethod
    def from_run(
        cls, run_dir: str | Path, checkpoint: str = "best", device: str = "auto", dtype: str = "auto", check_memory: bool = True
    ) -> Generator:
        """Load a run's checkpoint (`best`, falling back to `last`) and its tokenizer."""
        validate_system(SystemConfig(device=device, dtype=dtype))
        system = resolve_system(device, dtype, "false")
        model, meta, _ = load_model(Path(run_dir), checkpoint, system.device)
        if system.dtype != "float32":
            store_block_weights_in(model, system.torch_dtype)
        return cls(model, load_tokenizer(meta), system, check_memory)

    def generate(
        self,
        prompt: str = "\n",
        num_samples: int = 1,
        max_new_tokens: int = 500,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float = 1.0,
        seed: int = 1337,
        stop: str | Sequence[str] = (),
        kv_cache: bool = True,
        window: str = "halve",
        on_text: Callable[[str], None] | None = None,
    ) -> list[str]:
        """num_samples continuations of prompt, generated as one batch, each with the prompt in
        front and cut at its first stop string (the stop strings are looked for in the generated
        text only). on_text receives the first sample piece by piece as it is generated, the
        prompt first: the pieces add up to the first returned text. A sample that stops early
        stays in the batch until all have stopped, so stop strings never change the other samples."""
        stop = [stop] if isinstance(stop, str) else list(stop)
        validate_generation(
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            window=window,
            seed=seed,
        )
        if not prompt:
            raise ConfigError("prompt is empty: give at least one character (the default is a newline)")
        try:
            prompt_ids = self.tokenizer.encode(prompt)
        except DataError as exc:
            raise ConfigError(f"prompt cannot be encoded: {exc}") from None

        device = self.system.device
        if self.check_memory:
            needs = memory.sampling(dataclasses.asdict(self.model.config), num_samples, len(prompt_ids) + max_new_tokens, self.system.dtype)
            memory.check(needs, device, f"sampling {num_samples} texts at once")
        idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
        samples = [Continuation(self.tokenizer, stop) for _ in range(num_samples)]
        steps = sample_tokens(
            self.model,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=torch.Generator(device=device).manual_seed(seed),
            kv_cache=kv_cache,
            window=window,
            cache_dtype=self.system.torch_dtype,
            vocab_size=self.tokenizer.vocab_size,
        )
        if on_text is not None:
            on_text(prompt)
        with self.system.autocast():
            for tokens in steps:
                for sample, token in zip(samples, tokens.view(-1).tolist()):
                    sample.add(token)
                if on_text is not None and (piece := samples[0].take_final()):
                    on_text(piece)
                if all(sample.done for sample in samples):
                    break
        for sample in samples:
            sample.finish()
        if on_text is not None and (piece := samples[0].take_final()):
            on_text(piece)
        return [prompt + sample.text for sample in samples]


def generate(
    run_dir: str | Path,
    prompt: str = "\n",
    *,
    checkpoint: str = "best",
    device: str = "auto",
    dtype: str = "auto",
    **options: Any,
) -> list[str]:
    """Load a run's model and generate from it once: Generator.from_run(...).generate(prompt,
    **options). Sampling repeatedly? Keep a Generator, which loads the checkpoint only once."""
    return Generator.from_run(run_dir, checkpoint, device, dtype).generate(prompt, **options)
