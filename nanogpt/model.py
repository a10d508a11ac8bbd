"""The GPT-2 language model, readable top to bottom.

A stack of pre-LayerNorm transformer blocks over token + position embeddings, with the output
head sharing the token embedding matrix. Attention goes through PyTorch's
scaled_dot_product_attention, which picks a flash / memory-efficient kernel where one exists.
For generation, an optional KVCache keeps every layer's keys and values so that each new token
costs one position's worth of compute instead of a rerun of the whole context. Such a decode step
reads every weight once and does little else, so its time is the memory's (the weights streamed
once) plus a fixed cost per PyTorch call, which at batch 1 is a visible share of a token's time:
the forward pass makes no call that does nothing (dropout outside training, index tensors for
the positions), and DecodeStep, at the end, runs a token's step without nn.Module's machinery.

GPTConfig also offers the changes that made modded-nanogpt's GPT-2 speedrun fastest: rotary
position embeddings, RMSNorm, QK-norm, a ReLU^2 MLP, an untied output head and zero-initialised
output projections. Each is off by default (the defaults are GPT-2: nanogpt.architecture, which
states every size and option once) and works alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt.architecture import Activation, Architecture, Gelu, Norm, Position


@dataclass(kw_only=True)
class GPTConfig(Architecture):
    """The sizes and options of nanogpt.architecture (each GPT-2's unless changed), and the two
    sizes that come from the data: the vocabulary and the context length."""

    vocab_size: int
    block_size: int

    def __post_init__(self) -> None:
        # Each choice is checked against its list (a ValueError names a bad one) and kept as a
        # plain string, so that the config, as dataclasses.asdict gives it, is plain data that a
        # checkpoint can hold (torch.load(weights_only=True) refuses enums).
        for name, choice in (("gelu_approximate", Gelu), ("position", Position), ("norm", Norm), ("activation", Activation)):
            setattr(self, name, choice(getattr(self, name)).value)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nn.LayerNorm cannot turn the bias off alone)."""

    eps = 1e-5

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Scales each vector to unit root-mean-square, then by a learned gain. Unlike LayerNorm it
    neither centres nor shifts, and trains as well (Zhang & Sennrich 2019). Fewer operations, but
    not a fused kernel on CPUs, where it is slower than LayerNorm."""

    def __init__(self, ndim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight)


def make_norm(config: GPTConfig) -> nn.Module:
    return RMSNorm(config.n_embd) if config.norm == "rmsnorm" else LayerNorm(config.n_embd, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021). Each pair of query/key channels is rotated
    by an angle proportional to the token's position, at a different frequency per pair, so a
    query-key dot product depends on how far apart the two tokens are rather than on where
    they are. Nothing is learned, and the angles are not part of the state dict."""

    def __init__(self, head_size: int, block_size: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, head_size / 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, n_head, T, head_size) for the positions start .. start + T - 1."""
        T = x.size(2)
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        # The pairs are (channel i, channel i + head_size / 2), a layout that needs no interleaving.
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class KVCache:
    """The keys and values of the tokens fed so far, for every layer, preallocated for a full
    context. A token's keys and values depend on its position, so the cache is only valid for a
    context that starts where it started; `reset` empties it for a new one."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        # Each layer's (keys, values), as views made once: new tokens are written into them in place.
        self.layers = [(self.keys[i], self.values[i]) for i in range(config.n_layer)]
        self.length = 0  # tokens cached so far, which is also the position of the next one

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # One matmul computes queries, keys and values for all heads at once.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        head_size = config.n_embd // config.n_head
        self.rotary = Rotary(head_size, config.block_size, config.rope_base) if config.position == "rope" else None
        # QK-norm: unit-RMS queries and keys bound the attention logits, so a large learning
        # rate cannot blow up the softmax (Dehghani et al. 2023).
        self.qk_norm = config.qk_norm

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3 * C) -> 3 x (B, n_head, T, head_size): heads become a batch dimension.
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if self.rotary is not None:
            q, k = self.rotary(q, start), self.rotary(k, start)
        if cache is not None:
            # Write this step's keys and values into the cache in place (no concatenation, no new
            # memory); the queries then attend to every cached position.
            cache_k, cache_v = cache
            cache_k.narrow(2, start, T).copy_(k)
            cache_v.narrow(2, start, T).copy_(v)
            k, v = cache_k.narrow(2, 0, start + T), cache_v.narrow(2, 0, start + T)
        # is_causal aligns its mask with the first key, which is right when the queries are all of
        # the keys (a whole context, or a cache's prefill). A single new token may see every key.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1)
        y = self.c_proj(y.transpose(1, 2).reshape(B, T, C))  # reshape copies only when T > 1
        # Dropout is the identity outside training: not calling it saves a call per use per token.
        return self.resid_dropout(y) if self.training else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # Exact GELU by default; GPT-2 used the tanh approximation, and its weights need it to
        # reproduce their logits exactly.
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        # ReLU^2 (So et al. 2021, "Primer"): cheaper than GELU and learns faster in small models.
        self.relu2 = config.activation == "relu2"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        h = F.relu(h).square() if self.relu2 else self.gelu(h)
        h = self.c_proj(h)
        return self.dropout(h) if self.training else h


class Block(nn.Module):
    """Pre-norm residual block: normalising before each sub-layer keeps the residual stream
    an identity path from input to output, which is what lets deep stacks train stably."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, start)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        layers = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.position == "learned":  # rope rotates queries and keys instead
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        layers.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        )
        self.transformer = nn.ModuleDict(layers)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying: the same matrix maps tokens to vectors and vectors back to token
            # scores. It saves vocab_size * n_embd parameters and trains at least as well at
            # GPT-2's scale (Press & Wolf 2017); small fast-trained models gain from untying.
            self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the init of the projections that write into the residual stream by
        # 1/sqrt(2 * n_layer): each block adds two such outputs, and without the scaling the
        # variance of the residual stream would grow with depth. Zero-initialised, every block
        # starts as the identity and the untied head predicts uniformly: training begins from
        # the embeddings alone and each layer grows in only as far as it helps.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or (name == "lm_head.weight" and not config.tie_embeddings):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                elif name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; embedding lookups are left out by default since they do no compute
        (tied token embeddings stay in: they are the output head too)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None, every_position: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position and the mean cross-entropy when targets are given; without
        targets only the last position's logits are computed (all that generation needs), or
        every position's with every_position (scoring given text: nanogpt.lm_eval_model).

        With a kv_cache, idx continues the tokens already cached: either a whole context into an
        empty cache (the prefill) or then one token at a time."""
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} exceeds the context length {self.config.block_size}")
        if start > 0 and T > 1:
            raise ValueError("a KV cache takes a whole context when empty, then one token at a time")
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe.weight[start : start + T]  # positions start .. start + T - 1
        if self.training:
            x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if kv_cache is None else kv_cache.layers[i], start)
        if kv_cache is not None:
            kv_cache.length += T
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x if every_position else x[:, -1:, :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B:
        6 per parameter plus the attention score and value products."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def bound(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Linear's or a norm's forward as a plain function of x with the module's weights bound in."""
    if isinstance(module, nn.Linear):
        return partial(F.linear, weight=module.weight, bias=module.bias)
    if isinstance(module, LayerNorm):
        return partial(F.layer_norm, normalized_shape=module.weight.shape, weight=module.weight, bias=module.bias, eps=module.eps)
    if isinstance(module, RMSNorm):
        return partial(F.rms_norm, normalized_shape=module.weight.shape, weight=module.weight)
    raise TypeError(f"no plain function for {type(module).__name__}")


@dataclass
class BoundBlock:
    """A Block's computations for one token, as plain functions (see DecodeStep)."""

    ln_1: Callable[[torch.Tensor], torch.Tensor]
    c_attn: Callable[[torch.Tensor], torch.Tensor]
    rotary: Rotary | None
    attn_proj: Callable[[torch.Tensor], torch.Tensor]
    ln_2: Callable[[torch.Tensor], torch.Tensor]
    c_fc: Callable[[torch.Tensor], torch.Tensor]
    activation: Callable[[torch.Tensor], torch.Tensor]
    mlp_proj: Callable[[torch.Tensor], torch.Tensor]


class DecodeStep:
    """The next logits (B, 1, vocab) for idx (B, 1), one new token per row after those in a KV
    cache: what GPT.forward(idx, kv_cache=cache) computes (the same calls on the same tensors, so
    the same numbers), with the weights gathered into plain functions once per generation.

    Why: a batch-1 decode step streams every weight once in 25 matrix-vector products (the small
    model) and makes about 150 small calls besides. Reached through nn.Module's call machinery and
    its attribute lookups, those calls cost about a tenth of the weights' streaming time more on a
    2-core CPU (with the other cuts, a decode step went from 1.45x to 1.30x the time of the 25
    products alone: docs/benchmarks.md). Inference only: no dropout.
    """

    def __init__(self, model: GPT):
        config = model.config
        self.block_size = config.block_size
        self.n_head, self.head_size = config.n_head, config.n_embd // config.n_head
        self.qk_norm = config.qk_norm
        self.wte = model.transformer.wte.weight
        self.wpe = model.transformer.wpe.weight if "wpe" in model.transformer else None
        self.blocks = [
            BoundBlock(
                ln_1=bound(block.ln_1),
                c_attn=bound(block.attn.c_attn),
                rotary=block.attn.rotary,
                attn_proj=bound(block.attn.c_proj),
                ln_2=bound(block.ln_2),
                c_fc=bound(block.mlp.c_fc),
                activation=(lambda h: F.relu(h).square()) if block.mlp.relu2 else partial(F.gelu, approximate=block.mlp.gelu.approximate),
                mlp_proj=bound(block.mlp.c_proj),
            )
            for block in model.transformer.h
        ]
        self.ln_f, self.lm_head = bound(model.transformer.ln_f), bound(model.lm_head)

    def __call__(self, idx: torch.Tensor, kv_cache: KVCache) -> torch.Tensor:
        B, start = idx.size(0), kv_cache.length
        if start + 1 > self.block_size:
            raise ValueError(f"sequence of length {start + 1} exceeds the context length {self.block_size}")
        x = F.embedding(idx, self.wte)
        if self.wpe is not None:
            x = x + self.wpe[start : start + 1]
        for block, (cache_k, cache_v) in zip(self.blocks, kv_cache.layers):
            # As CausalSelfAttention.forward with T = 1: (B, 1, 3 * C) -> 3 x (B, n_head, 1, head_size).
            q, k, v = block.c_attn(block.ln_1(x)).view(B, 1, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)
            if self.qk_norm:
                q, k = F.rms_norm(q, (self.head_size,)), F.rms_norm(k, (self.head_size,))
            if block.rotary is not None:
                q, k = block.rotary(q, start), block.rotary(k, start)
            cache_k.narrow(2, start, 1).copy_(k)
            cache_v.narrow(2, start, 1).copy_(v)
            y = F.scaled_dot_product_attention(q, cache_k.narrow(2, 0, start + 1), cache_v.narrow(2, 0, start + 1))
            x = x + block.attn_proj(y.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp_proj(block.activation(block.c_fc(block.ln_2(x))))
        kv_cache.length += 1
        return self.lm_head(self.ln_f(x))
