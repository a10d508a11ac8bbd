"""The paths that GPU runs take, checked on a CPU: which device a process makes current, how the
model is wrapped for DDP and torch.compile, and training on when torch.compile cannot build."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch._dynamo.eval_frame import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

import nanogpt.training.setup
from nanogpt.checkpoint import checkpoint_path, load_checkpoint
from nanogpt.distributed import Dist
from nanogpt.metrics import read_metrics
from nanogpt.model import GPT, GPTConfig
from nanogpt.system import System, resolve_system
from nanogpt.training.loop import save
from nanogpt.training.setup import build, device_for, wrap_model
from tests.conftest import TINY, run_cli
from tests.test_config import compose_train


def test_the_process_makes_its_gpu_current_alone_on_cuda_n_and_under_ddp(monkeypatch):
    made_current: list[str] = []

    def set_device(device) -> None:
        # torch's own argument check first: it refuses a device without an index, such as plain
        # "cuda" (seen on an H100 with torch 2.11: the first GPU run failed there).
        torch.cuda._utils._get_device_index(device)
        made_current.append(str(device))

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    gpu = System(device="cuda:1", dtype="bfloat16", compile=True)
    assert device_for(gpu, Dist()).device == "cuda:1"
    assert device_for(gpu, Dist(rank=5, local_rank=3, world_size=8)).device == "cuda:3"  # its local rank's GPU
    # Plain "cuda" is the current GPU already: nothing to make current.
    assert device_for(System(device="cuda", dtype="bfloat16", compile=True), Dist()).device == "cuda"
    assert device_for(System(device="cpu", dtype="float32", compile=False), Dist()).device == "cpu"
    assert made_current == ["cuda:1", "cuda:3"]


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, enough to build a DDP module."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_is_compiled_whole_so_that_dynamo_can_split_it_at_the_gradient_buckets(process_group):
    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
    compiled = System(device="cpu", dtype="float32", compile=True)
    wrapped = wrap_model(model, compiled, Dist(world_size=2))
    assert isinstance(wrapped, OptimizedModule) and isinstance(wrapped._orig_mod, DDP) and wrapped._orig_mod.module is model
    assert wrap_model(model, System(device="cpu", dtype="float32", compile=False), Dist()) is model


def test_a_compiled_runs_checkpoint_holds_the_models_own_names(data_dir, tmp_path, monkeypatch):
    """torch.compile wraps the model (its state dict's names gain `_orig_mod.`); checkpoints hold
    the plain model's names, which sampling, export and an uncompiled resume load."""
    monkeypatch.setattr(nanogpt.training.setup, "compile_failure", lambda device: None)  # compilation is lazy: nothing is built here
    cfg = compose_train(*TINY, "system.compile=true", f"dataset.data_dir={data_dir}")
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile)
    run = build(cfg, tmp_path, system, Dist(), None, [], None)
    assert isinstance(run.step_model, OptimizedModule) and run.step_model._orig_mod is run.model
    assert all(name.startswith("_orig_mod.") for name in run.step_model.state_dict())
    save(run, "last")
    names = list(load_checkpoint(checkpoint_path(tmp_path, "last"))["model"])
    assert names == list(GPT(GPTConfig(**run.model_args)).state_dict()) and "transformer.wte.weight" in names


@pytest.mark.slow
def test_without_a_working_compiler_training_goes_on_uncompiled_after_one_warning(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "nanogpt.train",
        *TINY,
        "system.compile=true",
        "max_iters=4",
        "eval_interval=4",
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        env={"CXX": "/nonexistent/c++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "torch.compile" in line or "Traceback" in line]
    assert len(said) == 1 and "[WARNING]" in said[0], said
    assert "No working C++ compiler" in said[0] and said[0].endswith("training without it")
    assert read_metrics(run_dir / "metrics.jsonl")[0]["compile"] is False
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 4
