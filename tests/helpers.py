"""Helpers shared by the test files: a tiny model, a tiny digits recipe, one-line error checks."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {"base_e": 16, "incr_e": 16, "num_fire": 2}  # SqueezeNet options, ~2.5k parameters: fast on 2 cores


def digits_recipe(tmp_path: Path, **train) -> Path:
    """A tiny digits recipe (sklearn's real 8x8 digits, no data dir) exercising dropout, momentum,
    weight decay, label smoothing, a cosine schedule with warmup and augmentation. One torch thread:
    on a busy 2-core machine two spinning OpenMP threads ran this model ~20x slower."""
    cfg = {"model": {"name": "squeezenet1_1", "options": {**TINY, "dropout": 0.2}},
           "data": {"dataset": "digits", "batch_size": 64, "limit": 256, "cache_dir": str(tmp_path / "cache")},
           "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
           "schedule": {"name": "cosine", "warmup_epochs": 1},
           "train": {"epochs": 2, "label_smoothing": 0.1, "amp": "off", "seed": 3, "threads": 1, **train},
           "output": {"runs_dir": str(tmp_path / "runs")}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_line(excinfo, *needles: str) -> str:
    """The raised error's message: a single line containing every needle."""
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def cli_one_line_error(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI: it must exit 2 with exactly one stderr line (no traceback) containing every word."""
    from squeezelab.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def crash_then_resume(monkeypatch, recipe: Path, overrides: list[str], run_dir: Path, after_epoch: int) -> Path:
    """Train ``recipe`` into ``run_dir`` as if the job were killed right after epoch ``after_epoch``
    had been written, then ``--resume`` it to the end; returns the run folder."""
    import pytest

    from squeezelab.config import load_config
    from squeezelab.engine import fit
    from squeezelab.engine.run import Run

    original = Run._after_epoch

    def crash(self, row):
        original(self, row)
        if row["epoch"] == after_epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "_after_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(load_config(recipe, [*overrides, f"output.run_dir={run_dir}"]), progress=False)
    monkeypatch.setattr(Run, "_after_epoch", original)
    from squeezelab.engine import read_checkpoint

    assert read_checkpoint(run_dir / "last.safetensors").meta["epoch"] == after_epoch  # what a kill leaves
    return fit(load_config(run_dir / "config.yaml"), resume=run_dir, progress=False)
