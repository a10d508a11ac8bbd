import pytest
import torch

from nanogpt.config import ConfigError
from nanogpt.system import cpu_has_fast_bf16, peak_flops, resolve_system


def test_auto_on_this_machine():
    system = resolve_system("auto", "auto", "auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert system.device == "cpu" and system.compile is False
        assert system.dtype == ("bfloat16" if cpu_has_fast_bf16() else "float32")


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


def test_cpu_peak_is_a_plausible_number():
    peak = peak_flops(resolve_system("cpu", "float32", "false"))
    if peak is not None:
        assert 1e9 < peak < 1e14


def test_autocast_is_a_no_op_in_float32():
    system = resolve_system("cpu", "float32", "false")
    with system.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with resolve_system("cpu", "bfloat16", "false").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
