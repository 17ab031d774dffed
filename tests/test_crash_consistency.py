"""A run folder is consistent after a kill -9 at any instant: the process is killed just before and
just after every file replacement a run makes (each write boundary), then resumed; the folder must
end identical to a run never interrupted — weights, best, metrics rows and summary — with no
temp file left behind.

Children fork from a forkserver that has imported torch but never run a parallel region (forking a
process that has, like pytest's, can hang OpenMP), so each killed run costs a fraction of a second."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import digits_recipe

TIMING = ("epoch_seconds", "images_per_second")


def _child(recipe: str, run_dir: str, resume: bool, kill_at: int | None, when: str) -> None:
    """Train (or resume) in this process; SIGKILL itself just before or after the ``kill_at``-th
    os.replace (every atomic write ends in one); without kill_at, write the count to run_dir.writes."""
    real, calls = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if calls[0] == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    from squeezelab.config import load_config
    from squeezelab.engine import fit

    fit(load_config(recipe, [f"output.run_dir={run_dir}"]), resume=run_dir if resume else None, progress=False)
    Path(run_dir + ".writes").write_text(str(calls[0]))


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["torch", "squeezelab.engine", "squeezelab.config"])
    return context


def _run(ctx, *args) -> int:
    p = ctx.Process(target=_child, args=args)
    p.start()
    p.join(120)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def _snapshot(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    def rows():
        return [{k: v for k, v in r.items() if k not in TIMING}
                for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]

    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("seconds"), summary.pop("run_id")
    summary["final"] = {k: v for k, v in summary["final"].items() if k not in TIMING}
    return {"metrics": rows(), "summary": summary,
            **{name: load_file(run_dir / name) for name in ("last.safetensors", "best.safetensors")},
            "files": sorted(p.name for p in run_dir.iterdir())}


def _same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"]
    assert a["metrics"] == b["metrics"]
    assert a["summary"] == b["summary"]
    for name in ("last.safetensors", "best.safetensors"):
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert a[name][k].equal(b[name][k]), (name, k)


def _kill_resume_compare(ctx, tmp_path: Path, epochs: int, pick) -> int:
    """Kill a run at the write boundaries ``pick(n_writes)`` chooses, resume each, compare each with an
    uninterrupted run; returns the number of kills."""
    recipe = str(digits_recipe(tmp_path, epochs=epochs))  # warmup: epoch 1 is the worst, best moves
    reference = tmp_path / "reference"
    assert _run(ctx, recipe, str(reference), False, None, "after") == 0
    writes = int(Path(f"{reference}.writes").read_text())
    assert 3 + 2 * epochs + 1 < writes <= 3 + 3 * epochs + 1, writes  # best.safetensors: at least once
    want, kills = _snapshot(reference), 0
    for k in pick(writes):
        for when in ("before", "after"):
            run_dir = tmp_path / f"k{k}-{when}"
            assert _run(ctx, recipe, str(run_dir), False, k, when) == -signal.SIGKILL
            kills += 1
            if not (run_dir / "config.yaml").exists():  # killed before the run existed: start it again
                assert _run(ctx, recipe, str(run_dir), False, None, "after") == 0
            elif not (run_dir / "summary.json").exists():
                assert _run(ctx, recipe, str(run_dir), True, None, "after") == 0, f"resume after {when} write {k}"
            _same(_snapshot(run_dir), want)
            assert not list(run_dir.glob(".*.tmp")), f"temp file left after a kill {when} write {k}"
    return kills


def test_kill_around_the_end_of_an_epoch_then_resume_ends_as_uninterrupted(tmp_path, ctx):
    # writes: config.yaml, environment.json, last (epoch 0), then per epoch last, [best], metrics; summary.
    # Epoch 1 always improves on nothing: writes 4-6 are its last, best, metrics; the final one the summary.
    # Three boundaries (the run barely exists, mid-epoch between last and best, the summary) keep the
    # default suite short; the slow test below kills at every one.
    kills = _kill_resume_compare(ctx, tmp_path, 2, lambda n: [1, 5, n])
    assert kills == 6


@pytest.mark.slow
def test_kill_at_every_write_boundary_then_resume_ends_as_uninterrupted(tmp_path, ctx):
    assert _kill_resume_compare(ctx, tmp_path, 3, lambda n: range(1, n + 1)) >= 2 * 12
