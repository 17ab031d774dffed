"""A runtime in a worker process (deploy/backends/isolated.py): same answers as in this process, its own
timings, and a crash there is one line here while this process goes on. Exercised with the torch backend
loaded through ``isolated.load`` (no edge runtime needed); ExecuTorch, the backend that uses it, in
tests/test_edge.py."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
import torch

from squeezelab.deploy import backends
from squeezelab.errors import WeightsError
from squeezelab.models import create_model
from squeezelab.weights import save_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("squeezenet1_1", num_classes=10, stem="small", bn_fire=True, bn_conv1=True).eval()
    path = tmp_path_factory.mktemp("w") / "d.safetensors"
    save_checkpoint(path, net, meta={"model": net.model_spec, "preset": "digits", "classes": [str(i) for i in range(10)]})
    return str(path)


class _IsolatedTorch:
    """The torch backend, its files loaded as ExecuTorch's are: in a worker."""

    def load(self, path, threads=1):
        from squeezelab.deploy.backends import isolated

        return isolated.load("torch", path, threads=threads, precision=None)

    def load_here(self, path):
        return backends.get("torch").load_here(path)


@pytest.fixture
def isolated_torch():
    return _IsolatedTorch()


def test_a_worker_answers_as_this_process_does_and_times_its_own_calls(weights, isolated_torch):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    here = isolated_torch.load_here(weights)
    there = isolated_torch.load(weights, threads=1)
    assert there.worker.proc.pid != os.getpid()
    np.testing.assert_allclose(there.run(x), here.run(x), rtol=0, atol=1e-6)
    assert there.meta == here.meta and there.describe() == here.describe()
    seconds = there.time_calls(x, 4)
    assert len(seconds) == 4 and all(0 < s < 60 for s in seconds)
    proc = there.worker.proc
    del there  # the worker stops with its Loaded
    assert proc.wait(timeout=30) == 0


def test_a_crash_in_the_worker_is_one_line_here(weights, isolated_torch):
    loaded = isolated_torch.load(weights, threads=1)
    os.kill(loaded.worker.proc.pid, signal.SIGSEGV)  # what ExecuTorch's XNNPACK backend did (results/edge/)
    with pytest.raises(WeightsError, match=r"process died \(signal SIGSEGV\)") as err:
        loaded.run(np.zeros((1, 3, 32, 32), np.float32))
    assert "\n" not in str(err.value)
    again = isolated_torch.load(weights, threads=1)  # this process is fine: a new worker runs
    assert again.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_the_workers_errors_come_back_as_they_were_raised(tmp_path, isolated_torch):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError) as err:
        isolated_torch.load(bad, threads=1)
    with pytest.raises(WeightsError) as here:
        isolated_torch.load_here(bad)
    assert str(err.value) == str(here.value) and re.search("bad.safetensors", str(err.value))


def test_a_worker_that_dies_at_start_says_its_last_words(tmp_path, weights, isolated_torch, monkeypatch):
    from squeezelab.deploy.backends import isolated

    python = tmp_path / "python"  # a worker that cannot start (a broken interpreter, a missing library)
    python.write_text("#!/bin/sh\necho 'ImportError: libexample.so: cannot open shared object file' >&2\nexit 3\n")
    python.chmod(0o755)
    monkeypatch.setattr(isolated.sys, "executable", str(python))
    with pytest.raises(WeightsError, match=r"process died \(exit code 3: ImportError: libexample.so") as err:
        isolated_torch.load(weights, threads=1)
    assert "\n" not in str(err.value)
