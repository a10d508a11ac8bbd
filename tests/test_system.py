import io
import os
from pathlib import Path

import pytest
import torch

import nanogpt.system
from nanogpt.config import ConfigError
from nanogpt.system import System, peak_flops, resolve_system


def test_auto_on_this_machine():
    system = resolve_system("auto", "auto", "auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert system.device == "cpu" and system.compile is False
        # Nothing is assumed from CPU flags: float32, unless the trainer is to measure.
        assert system.dtype == "float32"
        assert resolve_system("auto", "auto", "auto", measure_cpu_dtype=True).dtype == "auto"
        assert resolve_system("cpu", "bfloat16", "auto", measure_cpu_dtype=True).dtype == "bfloat16"


def test_explicit_choices_are_kept():
    system = resolve_system("cpu", "bfloat16", "true")
    assert (system.device, system.dtype, system.compile) == ("cpu", "bfloat16", True)
    assert system.torch_dtype is torch.bfloat16


def test_float16_needs_cuda():
    with pytest.raises(ConfigError, match="system.dtype='float16' is invalid on cpu"):
        resolve_system("cpu", "float16", "auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_system("cuda", "auto", "auto")


def test_cpu_peak_is_a_plausible_number_where_proc_cpuinfo_gives_flags_and_clock():
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this machine")
    lines = cpuinfo.splitlines()
    if not any(line.startswith("flags") for line in lines) or not any(line.startswith("cpu MHz") for line in lines):
        pytest.skip("/proc/cpuinfo here has no flags or cpu MHz line (an ARM CPU, say)")
    peak = peak_flops(resolve_system("cpu", "float32", "false"))
    assert peak is not None and 1e9 < peak < 1e14


def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch, text: str, affinity: int = 8, threads: int = 4) -> None:
    """nanogpt.system reads `text` as /proc/cpuinfo, may run on `affinity` cores and torch uses `threads`."""
    real_open = open
    monkeypatch.setattr(
        nanogpt.system, "open", lambda path, *a, **k: io.StringIO(text) if path == "/proc/cpuinfo" else real_open(path, *a, **k), raising=False
    )
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    nanogpt.system.cpu_flags.cache_clear()


@pytest.fixture
def fresh_cpu_flags():
    nanogpt.system.cpu_flags.cache_clear()
    yield
    nanogpt.system.cpu_flags.cache_clear()  # the real machine's flags again


@pytest.mark.parametrize(
    "flags, float32, bfloat16",
    [
        # cores (min of 8 allowed and 4 threads) x 2.5 GHz x 2 FMA units x lanes x 2 FLOPs per FMA
        ("fpu sse2 avx avx2 fma avx512f avx512_bf16", 4 * 2.5e9 * 2 * 16 * 2, 4 * 2.5e9 * 2 * 32 * 2),
        ("fpu sse2 avx avx2 fma avx512f", 4 * 2.5e9 * 2 * 16 * 2, 4 * 2.5e9 * 2 * 16 * 2),
        ("fpu sse2 avx avx2 fma", 4 * 2.5e9 * 2 * 8 * 2, 4 * 2.5e9 * 2 * 8 * 2),
        ("fpu sse2", 4 * 2.5e9 * 2 * 4 * 2, 4 * 2.5e9 * 2 * 4 * 2),
    ],
)
def test_cpu_peak_is_cores_times_clock_times_flops_per_cycle(monkeypatch, fresh_cpu_flags, flags, float32, bfloat16):
    fake_cpuinfo(monkeypatch, f"processor\t: 0\nmodel name\t: A CPU\ncpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n")
    assert peak_flops(System(device="cpu", dtype="float32", compile=False)) == pytest.approx(float32, rel=1e-12)
    assert peak_flops(System(device="cpu", dtype="bfloat16", compile=False)) == pytest.approx(bfloat16, rel=1e-12)


@pytest.mark.parametrize("cpuinfo", ["processor\t: 0\nflags\t\t: avx2\n", "processor\t: 0\ncpu MHz\t\t: 2500.000\n", ""])
def test_cpu_peak_is_unknown_without_a_clock_or_flags(monkeypatch, fresh_cpu_flags, cpuinfo):
    fake_cpuinfo(monkeypatch, cpuinfo)
    assert peak_flops(System(device="cpu", dtype="float32", compile=False)) is None


def test_autocast_is_a_no_op_in_float32():
    system = resolve_system("cpu", "float32", "false")
    with system.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with resolve_system("cpu", "bfloat16", "false").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_gpu_peak_is_the_most_specific_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = peak_flops(System(device="cuda", dtype="bfloat16", compile=False))
    assert peak == (tflops * 1e12 if tflops else None)


@pytest.mark.parametrize("capability, dtype", [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")])
def test_auto_dtype_on_a_gpu_is_bfloat16_only_with_bfloat16_tensor_cores(monkeypatch, capability, dtype):
    # torch.cuda.is_bf16_supported() says yes on a V100 or T4 (emulated bfloat16): not asked.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve_system("cuda", "auto", "auto").dtype == dtype
    if dtype == "float16":
        with pytest.raises(ConfigError, match="system.dtype='bfloat16' is invalid: a GPU cannot run bfloat16"):
            resolve_system("cuda", "bfloat16", "auto")
