"""A trained GPT as a model of EleutherAI's lm-evaluation-harness (lm_eval), which then runs any of
its benchmarks on it: `nanogpt-eval` and evaluation during training use it (nanogpt.evaluation.harness).

    from nanogpt.evaluation.lm import NanoGPTLM
    import lm_eval
    lm = NanoGPTLM.from_run("outputs/2026-11-25/17-03-11", batch_size=32)
    results = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

It scores text the way lm-eval's own Hugging Face model (HFLM) does, so that a run exported to a
GPT-2 folder gets the same numbers from both: lm_eval's TemplateLM splits each (context,
continuation) pair into tokens and conditions an empty context on the end-of-text token;
log-likelihoods come from batches of right-padded rows, a row longer than the context keeping
its last block_size tokens (truncated from the left: the continuation stays whole); rolling
log-likelihoods use lm_eval's own windows; the log-probabilities are over the tokenizer's
vocabulary, never the padding rows of a padded embedding. Generation is nanogpt.generation's,
greedy unless a task asks to sample, with the KV cache.

This module imports lm_eval, an optional dependency (`pip install "nanogpt[eval]"`); import it only
where benchmarks are asked for (nanogpt.evaluation.harness.require_lm_eval says what is missing).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from nanogpt.data import CharTokenizer, Tokenizer
from nanogpt.errors import DataError
from nanogpt.generation import Continuation, Generator, sample_tokens
from nanogpt.model import GPT
from nanogpt.system import System

log = logging.getLogger(__name__)

# Tokens generated for a task that sets no max_gen_toks: HFLM's default.
MAX_GEN_TOKS = 256


class NanoGPTLM(TemplateLM):
    """lm-eval's model interface (loglikelihood, loglikelihood_rolling, generate_until) over our
    GPT and the tokenizer it was trained with (characters, GPT-2's BPE or a BPE of its own)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, system: System, batch_size: int = 16):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.system = system
        self.batch_size = batch_size
        self.max_length = model.config.block_size
        self._device = torch.device(system.device)
        self._warned_unknown = False

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "auto", dtype: str = "auto", batch_size: int = 16) -> NanoGPTLM:
        """A run's checkpoint (`best`, falling back to `last`), loaded as nanogpt-sample loads it."""
        generator = Generator.from_run(run_dir, checkpoint, device, dtype)
        return cls(generator.model, generator.tokenizer, generator.system, batch_size)

    # ------------------------------------------------------------------------- tokens

    @property
    def eot_token_id(self) -> int:
        # What separates documents in the training stream: the end-of-text token where the
        # tokenizer has one (GPT-2's <|endoftext|>, which HFLM uses too), else a newline. An empty
        # context is conditioned on it (TemplateLM's prefix_token_id). A character vocabulary
        # without a newline has no such token; its first character stands in.
        separator = self.tokenizer.document_separator
        return separator[0] if separator else 0

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        try:
            return self.tokenizer.encode(string)
        except DataError:
            # Only a character vocabulary refuses text (tiny Shakespeare's has no digit but 3). A task is
            # still scored: an unknown character becomes the first one, as in the tokenizer that
            # nanogpt.export writes for such a model.
            assert isinstance(self.tokenizer, CharTokenizer)
            if not self._warned_unknown:
                log.warning("the task's text holds characters outside this model's vocabulary; they are scored as %r", self.tokenizer.itos[0])
                self._warned_unknown = True
            return [self.tokenizer.stoi.get(ch, 0) for ch in string]

    # ------------------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _log_probs(self, rows: list[list[int]]) -> torch.Tensor:
        """float32 log-probabilities (batch, longest row, vocabulary) of the token after each
        position of each row; shorter rows are padded on the right, which a causal model never
        sees from the positions before."""
        idx = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
        for i, row in enumerate(rows):
            idx[i, : len(row)] = torch.tensor(row)
        idx = idx.to(self._device)
        with self.system.autocast():
            logits, _ = self.model(idx, every_position=True)
        return F.log_softmax(logits[..., : self.tokenizer.vocab_size].float(), dim=-1)

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(log-probability of the continuation, whether greedy decoding gives it) per request,
        each an ((context, continuation) text, context tokens, continuation tokens) triple."""
        # Longest first, in batches of similar length; requests that differ only in their last
        # continuation token (one-token answers to the same question) share one row (HFLM's order
        # and grouping, lm_eval's Collator).
        collator = Collator(
            requests,
            sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
            group_by="contexts",
            group_fn=lambda r: r[1] + r[2][:-1],
        )
        results = []
        for chunk in collator.get_batched(n=self.batch_size):
            for _, _, continuation in chunk:
                if len(continuation) > self.max_length:  # HFLM asserts the same
                    raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's context of {self.max_length}")
            # The row of context + continuation without its last token, whose logits predict the
            # continuation; too long for the model, it keeps its last block_size tokens.
            rows = [(context + continuation)[-(self.max_length + 1) :][:-1] for _, context, continuation in chunk]
            for (text, context, continuation), row, log_probs in zip(chunk, rows, self._log_probs(rows)):
                scored = log_probs[len(row) - len(continuation) : len(row)].unsqueeze(0)  # (1, continuation, vocab)
                greedy = scored.argmax(dim=-1)
                for text, tokens, scored in collator.get_cache(req_str=text, cxt_toks=context, cont_toks=continuation, logits=scored):
                    target = torch.tensor(tokens, device=self._device).unsqueeze(0)
                    logprob = scored[:, -len(tokens) :].gather(2, target.unsqueeze(-1)).sum()
                    answer = (float(logprob), bool((greedy[:, -len(tokens) :] == target).all()))
                    results.append(answer)
                    if text is not None:  # rolling windows are cached per document, below
                        self.cache_hook.add_partial("loglikelihood", text, answer)
        return collator.get_original(results)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """The log-probability of each whole text (perplexity tasks): lm_eval's windows of at most
        block_size tokens, each token predicted once and with as much context as fits."""
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (text,) in (request.args for request in requests):
            tokens = self.tok_encode(text)
            pieces = get_rolling_token_windows(token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)
            document = [(None, *make_disjoint_window(piece)) for piece in pieces]
            windows += document
            counts.append(len(document))
        scores = iter(self._loglikelihood_tokens(windows, disable_tqdm=True))
        totals = []
        for request, count in zip(requests, counts):
            total = sum(logprob for logprob, _ in itertools.islice(scores, count))
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ------------------------------------------------------------------------- generation

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """The text each context continues with, up to the first of its stop strings (or the
        end-of-text token) or max_gen_toks tokens."""
        args = [request.args for request in requests]
        encoded = {context: self.tok_encode(context) or [self.prefix_token_id] for context, _ in args}
        # One batch shares its generation settings (lm_eval's Collator), longest contexts first.
        collator = Collator(args, sort_fn=lambda a: (-len(encoded[a[0]]), a[0]), group_by="gen_kwargs", group_fn=lambda a: a[1])
        texts = []
        for chunk in collator.get_batched(n=self.batch_size):
            gen_kwargs = chunk[0][1]
            options = normalize_gen_kwargs(gen_kwargs, MAX_GEN_TOKS)
            # HFLM's rule: a context keeps its last block_size - max_gen_toks tokens, so that it and
            # the generated text fit the model's context together. Where they cannot (max_gen_toks
            # >= block_size, which HFLM refuses), it keeps block_size tokens and the window slides.
            keep = self.max_length - options["max_gen_toks"]
            keep = keep if keep > 0 else self.max_length
            # The decoder extends a rectangular batch, without padding: rows of equal length go together.
            for _, same_length in itertools.groupby(chunk, key=lambda a: len(encoded[a[0]][-keep:])):
                contexts = [context for context, _ in same_length]
                for context, text in zip(contexts, self._generate([encoded[c][-keep:] for c in contexts], dict(options))):
                    texts.append(text)
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return collator.get_original(texts)

    @torch.inference_mode()
    def _generate(self, contexts: list[list[int]], options: dict) -> list[str]:
        """Continue equally long token lists as one batch, as lm_eval's normalised gen_kwargs ask."""
        eot = getattr(self.tokenizer, "eot_token", None)
        stop = handle_stop_sequences(options.pop("until", None), eos=self.tokenizer.decode([eot]) if eot is not None else None)
        samples = [Continuation(self.tokenizer, [s for s in stop if s]) for _ in contexts]
        steps = sample_tokens(
            self.model,
            torch.tensor(contexts, dtype=torch.long, device=self._device),
            options["max_gen_toks"],
            temperature=float(options.get("temperature") or 0.0),  # greedy unless the task samples
            top_k=options.get("top_k"),
            top_p=options.get("top_p") or 1.0,
            # Past the context, every token sees the last block_size tokens; until then the KV
            # cache serves every step.
            window="slide",
            cache_dtype=self.system.torch_dtype,
            vocab_size=self.tokenizer.vocab_size,
        )
        with self.system.autocast():
            for tokens in steps:
                for sample, token in zip(samples, tokens.view(-1).tolist()):
                    sample.add(token)
                if all(sample.done for sample in samples):
                    break
        for sample in samples:
            sample.finish()
        return [sample.text for sample in samples]
