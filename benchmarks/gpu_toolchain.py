"""The GPU suite's toolchain and memory sections (benchmarks/gpu.py runs them): torch, CUDA, the
card, bf16, flash attention and compiling a small function, measured by toolchain_worker in its
own process; then (e) every run's peak memory, gathered from the records of the sections before."""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu import Suite


def toolchain(suite: Suite) -> dict[str, Any]:
    info = suite.worker("toolchain", "toolchain", device=suite.device, dtype=suite.dtype)
    suite.peak_flops = info.get("peak_flops")  # the training sections' MFU divides by it
    return info


def toolchain_worker(device: str, dtype: str) -> dict[str, Any]:
    import torch
    from harness import machine

    from nanogpt.system import System, device_name, peak_flops

    cuda = device.startswith("cuda")
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
    }
    if cuda and not torch.cuda.is_available():
        return info
    info.update(
        machine=machine(),
        device_name=device_name(device),
        cudnn=torch.backends.cudnn.version(),
        bf16_supported=torch.cuda.is_bf16_supported() if cuda else None,
        flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
        mem_efficient_sdp_enabled=torch.backends.cuda.mem_efficient_sdp_enabled(),
        peak_flops=peak_flops(System(device=device, dtype=dtype, compile=False)),
        peak_flops_dtype=dtype,
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if cuda:
        props = torch.cuda.get_device_properties(device)
        info.update(capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1))
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(1, 6, 256, 64, device=device, dtype=torch.bfloat16)
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            info["flash_attention_runs"] = True
        except RuntimeError as exc:
            info.update(flash_attention_runs=False, flash_attention_error=str(exc).splitlines()[0])

    def small(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * torch.sigmoid(x) + x

    x = torch.randn(1024, 1024, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        start = time.perf_counter()
        compiled = torch.compile(small)(x)
        sync()
        info["compile_s"] = time.perf_counter() - start
        info["compile_matches_eager"] = bool(torch.allclose(compiled, small(x), atol=1e-5, rtol=1e-5))
    except Exception as exc:  # recorded: the training sections will show what it breaks
        info["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return info


def memory(suite: Suite) -> dict[str, Any]:
    """A row for every successful run that recorded a memory figure; runs no command."""
    rows: list[dict[str, Any]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if node.get("status") == "ok" and ("peak_memory_mb" in node or "gpu_memory_used_mb" in node):
                rows.append(
                    {
                        "run": ".".join(path),
                        "allocator_peak_mb": node.get("peak_memory_mb"),
                        "nvidia_smi_mb": node.get("gpu_memory_used_mb"),
                    }
                )
            for key, value in node.items():
                walk(value, (*path, key))

    walk({k: v for k, v in suite.results.items() if k != "memory"}, ())
    return {
        "rows": rows,
        "note": "allocator_peak_mb: the end record's peak_memory_mb (torch.cuda.max_memory_allocated; peak RSS on a CPU); "
        "nanoGPT's scripts print no memory figure. nvidia_smi_mb: the most device memory in use above idle while the "
        "command ran (CUDA context and allocator cache included), for both tools; none without nvidia-smi",
    }
