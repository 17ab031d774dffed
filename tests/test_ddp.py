"""The same `squeezelab train` command under `torchrun --nproc_per_node 2` trains with DDP (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from squeezelab.engine import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path):
    cfg = {"model": {"name": "squeezenet1_1", "options": {"base_e": 16, "incr_e": 16, "num_fire": 2}},
           "data": {"dataset": "digits", "batch_size": 64, "limit": 256, "cache_dir": str(tmp_path / "cache")},
           "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
           "train": {"epochs": 2, "amp": "off", "threads": 1, "device": "cpu"},
           "output": {"run_dir": str(tmp_path / "run")}}
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "squeezelab", "train", str(recipe), "--no-progress"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    assert out.stdout.strip().splitlines() == [str(run)]  # only rank 0 reports
    env_record = json.loads((run / "environment.json").read_text())
    assert env_record["world_size"] == 2
    summary = json.loads((run / "summary.json").read_text())
    # 256 images / 2 ranks / 32 per rank = 4 global steps per epoch
    assert summary["status"] == "finished" and summary["steps"] == 8
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["top1"] >= 0 for r in rows)
    ckpt = read_checkpoint(run / "last.safetensors")
    assert not any(k.startswith("module.") for k in ckpt.model_state)  # saved unwrapped


def _main_first_worker(rank: int, folder: str, port: int) -> None:
    import time

    import torch.distributed as dist

    from squeezelab import runtime

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        info = runtime.DistInfo(rank=rank, local_rank=rank, world_size=2)
        marker = Path(folder) / "rank0-done"
        with runtime.main_process_first(info):
            if rank == 0:
                time.sleep(0.5)  # rank 1 would overtake here if it did not wait
                marker.write_text("ok")
            else:
                (Path(folder) / "rank1-saw").write_text(str(marker.is_file()))
    finally:
        dist.destroy_process_group()


def test_main_process_first_lets_rank_0_fetch_and_decode_before_the_others(tmp_path):
    """Under torchrun, data loading (a --download, the decode cache) runs on rank 0 first."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_main_first_worker, args=(str(tmp_path), port), nprocs=2, join=True)
    assert (tmp_path / "rank1-saw").read_text() == "True"


def test_sync_bn_converts_only_for_several_processes_and_needs_cuda():
    import pytest
    from torch import nn

    from squeezelab import runtime
    from squeezelab.engine.run import _sync_bn
    from squeezelab.errors import ConfigError
    from squeezelab.models import create_model

    model = create_model("squeezenet1_1", num_classes=10, bn_fire=True, bn_conv1=True)
    keys = list(model.state_dict())
    one, two = runtime.DistInfo(), runtime.DistInfo(rank=0, world_size=2)
    assert _sync_bn(model, True, one, torch.device("cpu")) is model  # a single process: nothing to sync
    assert _sync_bn(model, False, two, torch.device("cuda", 0)) is model
    with pytest.raises(ConfigError, match="needs CUDA"):
        _sync_bn(model, True, two, torch.device("cpu"))
    synced = _sync_bn(model, True, two, torch.device("cuda", 0))  # conversion itself runs anywhere
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == 1 + 3 * 8
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    assert list(synced.state_dict()) == keys  # checkpoints keep plain keys
