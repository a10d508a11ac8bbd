"""Turn `system.{device,dtype,compile}` (which may say "auto") into concrete choices, estimate
the device's peak FLOP/s for MFU, and report peak memory."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import resource
import sys
from dataclasses import dataclass

import torch

from nanogpt.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class System:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    dtype: str  # "float32", "bfloat16", "float16"
    compile: bool

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass; float32 runs as it is."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.torch_dtype)

    def describe(self) -> str:
        return f"device={self.device} ({device_name(self.device)}) dtype={self.dtype} compile={self.compile}"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 9R14 ..."), else what platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cuda_has_fast_bf16(device: str) -> bool:
    """True where the GPU has bfloat16 tensor cores (compute capability 8.0, Ampere, and newer).
    torch.cuda.is_bf16_supported() also says yes where bfloat16 is only emulated, slower than
    float16 (a V100 or T4 under recent torch); on ROCm it is the answer we need."""
    if torch.version.hip:
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def resolve_system(device: str, dtype: str, compile: str, measure_cpu_dtype: bool = False) -> System:
    """Resolve "auto" values and refuse combinations the hardware cannot run (ConfigError).

    dtype=auto on a CPU is float32, or with measure_cpu_dtype stays "auto" for the trainer to
    settle by timing the model's own shapes (nanogpt/dtype_probe.py) once it knows them."""
    device, dtype = str(device), str(dtype)  # plain strings, whatever Choice a config held
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    kind = device.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"system.device={device!r} is invalid: no CUDA GPU is visible (use system.device=cpu or auto)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"system.device={device!r} is invalid: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"system.device={device!r} is invalid: MPS is not available here (use system.device=cpu or auto)")

    if dtype == "auto":
        if kind == "cuda":
            dtype = "bfloat16" if cuda_has_fast_bf16(device) else "float16"
        elif kind == "cpu" and measure_cpu_dtype:
            dtype = "auto"
        else:
            dtype = "float32"
    if dtype == "bfloat16" and kind == "cuda" and not cuda_has_fast_bf16(device):
        raise ConfigError(f"system.dtype='bfloat16' is invalid: {device_name(device)} cannot run bfloat16 (use float16 or auto)")
    if dtype == "float16" and kind != "cuda":
        raise ConfigError(f"system.dtype='float16' is invalid on {kind}: float16 training needs a CUDA GPU (use bfloat16 or float32)")

    compile_choice = str(compile).lower()
    use_compile = kind == "cuda" if compile_choice == "auto" else compile_choice == "true"
    return System(device=device, dtype=dtype, compile=use_compile)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple GPU"
    return cpu_model_name()


# Dense peak TFLOP/s (bf16/fp16 tensor cores, without sparsity; float32 means TF32) from the
# vendors' data sheets, looked up by the longest of these names found in
# torch.cuda.get_device_name() (so "NVIDIA H100 NVL" is an H100 NVL, not an SXM H100, and an
# "L40" is not an "L4").
_GPU_PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H200 NVL": (835.0, 418.0),
    "H100": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 418.0),
    "A100": (312.0, 156.0),
    "A10G": (125.0, 62.5),
    "L40S": (362.0, 183.0),
    "L40": (181.0, 90.5),
    "L4": (121.0, 60.0),
    "RTX 4090": (165.0, 82.6),
    "RTX 3090": (71.0, 35.6),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


def peak_flops(system: System) -> float | None:
    """Peak FLOP/s of the device at the run's dtype, or None where we cannot tell."""
    half = system.dtype in ("bfloat16", "float16")
    if system.device_type == "cuda":
        name = torch.cuda.get_device_name(torch.device(system.device))
        known = max((key for key in _GPU_PEAK_TFLOPS if key in name), key=len, default=None)
        if known is None:
            return None
        half_tflops, fp32_tflops = _GPU_PEAK_TFLOPS[known]
        return (half_tflops if half else fp32_tflops) * 1e12
    if system.device_type == "cpu":
        return _cpu_peak_flops(bf16=half)
    return None


def _cpu_peak_flops(bf16: bool) -> float | None:
    """cores x clock x FLOPs per cycle: two FMA units per core, each 8 (AVX2) or 16 (AVX-512)
    float32 lanes, 2 FLOPs per FMA; AVX512-BF16 doubles the lanes for bfloat16."""
    flags = cpu_flags()
    mhz = _cpu_mhz()
    if not flags or mhz is None:
        return None
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    if bf16 and "avx512_bf16" in flags:
        lanes *= 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = min(cores, torch.get_num_threads())
    return cores * mhz * 1e6 * 2 * lanes * 2


def _cpu_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1])
    except (OSError, ValueError):
        pass
    return None


def peak_memory_mb(device: str) -> float:
    """The most memory this process has held, in MiB: the CUDA allocator's peak on a GPU, the
    peak resident set size (all of the process) elsewhere."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
