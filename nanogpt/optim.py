"""The optimizers: nanoGPT's AdamW, and Muon for the hidden matrices with AdamW for the rest.

Muon (Jordan et al. 2024, the optimizer behind modded-nanogpt's speedrun records) keeps
SGD-momentum for each 2-D weight inside the transformer blocks, but before applying it replaces
the momentum matrix by the nearest semi-orthogonal matrix (all singular values set to 1). Plain
gradients of a matmul weight are dominated by a few directions; orthogonalising gives every
direction an equal step, which learns faster per token. Embeddings, the output head and the
1-D gains are not matmuls of hidden features and keep AdamW.

Both optimizers give every parameter group an `lr_ratio`: the training loop's schedule sets
`lr = scheduled learning_rate * lr_ratio`, so one warmup-and-decay schedule drives groups with
different base rates.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn as nn

from nanogpt.model import GPT


def build_optimizer(model: GPT, opt: Any, device_type: str) -> torch.optim.Optimizer:
    """The optimizer that cfg.optimizer names, over model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    betas = (opt.beta1, opt.beta2)
    if opt.name == "adamw":
        # The fused kernel does the whole update in one pass over memory (CUDA and CPU).
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(adamw_groups(params, opt.weight_decay), lr=opt.learning_rate, betas=betas, fused=fused)
    hidden = [p for p in model.transformer.h.parameters() if p.requires_grad and p.dim() == 2]
    # Untied embeddings are lookups, not matmuls: each row gets a gradient only when its token
    # occurs, and they learn best at a far higher rate than the head. A tied matrix is the head.
    embeddings = [
        m.weight
        for m in model.transformer.values()
        if isinstance(m, nn.Embedding) and m.weight.requires_grad and m.weight is not model.lm_head.weight
    ]
    taken = {id(p) for p in hidden + embeddings}
    rest = [p for p in params if id(p) not in taken]
    embedding_lr = opt.embedding_learning_rate or opt.learning_rate
    groups = [
        {"params": hidden, "use_muon": True, "weight_decay": opt.muon_weight_decay, "lr_ratio": opt.muon_learning_rate / opt.learning_rate},
        {"params": embeddings, "weight_decay": opt.weight_decay, "lr_ratio": embedding_lr / opt.learning_rate},
        *adamw_groups(rest, opt.weight_decay),
    ]
    return Muon([g for g in groups if g["params"]], lr=opt.learning_rate, momentum=opt.muon_momentum, betas=betas)


def adamw_groups(params: list[torch.Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay for 2-D weights (matmuls and embeddings) only: decaying biases and gains only hurts."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "lr_ratio": 1.0},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_ratio": 1.0},
    ]


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """An approximation of U V^T for g = U S V^T, by a quintic Newton-Schulz iteration.

    Each step maps every singular value s to a s + b s^3 + c s^5; with these coefficients
    (chosen to make the map steep at 0 and to hover near 1) five steps take every singular
    value in (0, 1] to roughly [0.7, 1.2], which is as good as exact orthogonalisation for
    training and far cheaper than an SVD. Dividing by the Frobenius norm first puts all
    singular values in (0, 1]."""
    a, b, c = 3.4445, -4.7750, 2.0315
    # bfloat16 is plenty for this iteration and much faster on GPUs; CPUs without native
    # bfloat16 would emulate it, so there it runs in float32.
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    wide = x.size(-2) <= x.size(-1)
    if not wide:  # iterate on the smaller Gram matrix x x^T
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(g.dtype)


def _is_dtensor(t: torch.Tensor) -> bool:
    """Whether t is a DTensor, without importing torch.distributed.tensor (half a second of every
    start): a DTensor exists only where FSDP has imported it already."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def whole(t: torch.Tensor) -> torch.Tensor:
    """The whole matrix of a parameter's gradient or momentum. Under FSDP (nanogpt.fsdp) they are
    DTensors of which each rank holds some rows, and orthogonalisation needs the whole matrix:
    every rank gathers it and orthogonalises all of them (the same work on every rank; simple
    and exact, where assigning matrices to ranks would save the duplicated compute)."""
    return t.full_tensor() if _is_dtensor(t) else t


def shard_like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's part of the whole update `full`, sharded as param is (no communication: every
    rank holds the same whole update)."""
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
    return full


class Muon(torch.optim.Optimizer):
    """Muon for the groups with use_muon=True, AdamW for the others, in one optimizer: one state
    dict to checkpoint, one set of param_groups for the schedule and the grad scaler."""

    def __init__(
        self,
        params: list[dict[str, Any]],
        lr: float,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        ns_steps: int = 5,
    ):
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, ns_steps=ns_steps, weight_decay=0.0, use_muon=False, lr_ratio=1.0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        assert closure is None, "Muon takes no closure"
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)

    # Each step runs the same few kernels whatever the depth: torch._foreach_* ops update a whole
    # list of tensors in one launch (on CUDA), and Newton-Schulz runs once per matrix shape. A
    # loop over the parameters would launch about ten kernels per tensor, which for a small model
    # takes longer than the arithmetic.

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if not self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_lerp_(buffers, [p.grad for p in params], 1 - momentum)
        if decay:
            torch._foreach_mul_(params, 1 - lr * decay)
        by_shape: dict[torch.Size, list[int]] = {}
        for index, p in enumerate(params):
            by_shape.setdefault(p.shape, []).append(index)
        # The matrices of one shape (one per layer) are orthogonalised as one batch.
        for shape, indices in by_shape.items():
            grads = torch.stack([whole(params[i].grad) for i in indices])
            stacked_buffers = torch.stack([whole(buffers[i]) for i in indices])
            # Nesterov: step along the gradient blended with where the momentum is heading.
            updates = orthogonalize(grads.lerp_(stacked_buffers, momentum), group["ns_steps"])
            # An orthogonal update of a tall matrix has a smaller RMS per entry than a wide
            # one's; the scale gives every weight matrix about the same per-entry step.
            scale = max(1.0, shape[-2] / shape[-1]) ** 0.5
            shards = [shard_like(update, params[i]) for i, update in zip(indices, updates.unbind(0))]
            torch._foreach_add_([params[i] for i in indices], shards, alpha=-lr * scale)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)  # on the CPU, as torch's AdamW keeps it: reading it never syncs
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        steps = [s["step"].add_(1).item() for s in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        # Bias correction: m and v start at zero, so early averages are too small.
        denom = torch._foreach_div(v, [1 - beta2**step for step in steps])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        if decay:
            torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_addcdiv_(params, m, denom, [-lr / (1 - beta1**step) for step in steps])
