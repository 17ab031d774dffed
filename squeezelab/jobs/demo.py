"""The main job on the embedded default: the paper's claim in miniature, on a 2-core CPU, offline.

SqueezeNet's headline (Iandola et al. 2016, Table 2) is AlexNet-level accuracy with ~50x fewer
parameters. ``run_demo`` trains the small-input SqueezeNet 1.1 and the small-input AlexNet on the
1,797 real 8x8 handwritten digits that scikit-learn ships (1,437 train / 360 test, upsampled to
32 px), with the same data, schedule and epoch budget, and returns one row per model: test accuracy,
parameters and fp32 size. Each model leaves an ordinary run folder (``runs/<id>/``).

The recipe is chosen to finish in about a minute per model on 2 CPU cores, not to be the best
possible: digits is an easy set, so both models land near the same accuracy, which is the point.

Then the paper's second claim in miniature (``DEMO_COMPRESSION``): the trained SqueezeNet goes through
Deep Compression — pruning with retraining, 6-bit weight sharing with trained centroids and
distillation, entropy coding — into a ``.sqz`` file, which is read back and scored like any weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from squeezelab.config import config_from_dict

# (label, model, options, epochs). The small stems keep 32 px inputs from being downsampled to nothing.
# Epochs differ on purpose: one SqueezeNet epoch costs ~3 s on 2 cores and one AlexNet epoch ~18 s
# (measured), so at roughly equal wall-clock SqueezeNet gets 10 epochs and AlexNet 3; both are then
# near their plateau on digits (SqueezeNet after 4 epochs: 88%, still improving).
# BatchNorm in both (reports 001/003): without it SqueezeNet needs far more than the ~90 steps a
# 2-minute CPU budget allows to leave its initial plateau (measured: 12.5% after 4 epochs).
DEMO_MODELS: tuple[tuple[str, str, dict, int], ...] = (
    ("SqueezeNet 1.1 (small stem)", "squeezenet1_1",
     {"stem": "small", "conv1_stride": 2, "bn_conv1": True, "bn_fire": True}, 10),
    ("AlexNet (small input)", "alexnet", {"stem": "small", "bn": True}, 3),
)


@dataclass(frozen=True)
class DemoRow:
    label: str
    model: str
    top1: float  # test accuracy after the last epoch (not the best epoch: no selection on test)
    top5: float
    epochs: int
    params: int
    size_bytes: int  # fp32, or the .sqz file's bytes
    seconds: float  # wall-clock of the training run, evaluation included
    run_dir: str
    compressed: bool = False


# Deep Compression of the demo's SqueezeNet, stages as in Han et al. 2016: prune to 35% of the weights
# (conv1 kept whole: the paper's Table 1 keeps it dense too) and retrain; then 6-bit codebooks (8 for
# conv1) whose centroids retrain with distillation from the uncompressed model. Biases and BatchNorm
# are stored as float16. (stage epochs: ~2 s each on 2 cores.)
DEMO_COMPRESSION = {
    "stages": [
        {"name": "prune", "prune": {"density": {"conv1": 1.0, "default": 0.35}},
         "optim": {"lr": 5e-4}, "schedule": {"name": "cosine", "warmup_epochs": 0}, "train": {"epochs": 3}},
        {"name": "share", "share": {"bits": {"conv1": 8, "default": 6}},
         "distill": {"teacher": "source", "temperature": 2.0, "alpha": 0.5},
         "optim": {"lr": 1e-4}, "schedule": {"name": "cosine", "warmup_epochs": 0}, "train": {"epochs": 2}},
    ],
    "code": {"coder": "auto", "raw_float16": True},
}


def demo_config(model: str, options: dict, *, epochs: int, seed: int, runs_dir: str,
                threads: int | None = None) -> dict:
    """The shared recipe: Adam 2e-3, 1 warm-up epoch then linear decay to 0, batch 32, on the CPU with
    train.amp auto (bf16 on CPUs with native bf16, fp32 elsewhere: see runtime.resolve_amp)."""
    return {
        "model": {"name": model, "options": options},
        "data": {"dataset": "digits", "batch_size": 32},
        "optim": {"name": "adam", "lr": 2e-3, "weight_decay": 0.0},
        "schedule": {"name": "onecycle", "warmup_epochs": 1},
        # digits has no validation split: the table reports the last epoch, nothing is selected on test
        "train": {"epochs": epochs, "seed": seed, "device": "cpu", "threads": threads, "select": "last"},
        "output": {"runs_dir": runs_dir},
    }


def run_demo(*, epochs: int | None = None, seed: int = 0, runs_dir: str = "runs", threads: int | None = None,
             progress: bool = True, keep_checkpoints: bool = False) -> list[DemoRow]:
    """Train each of DEMO_MODELS on digits with the same recipe (``epochs`` overrides the table's
    per-model epochs); one DemoRow per model. Unless ``keep_checkpoints``, the finished runs are
    trimmed afterwards (``trim_runs``)."""
    from squeezelab.complexity import count_params, size_bytes
    from squeezelab.engine import fit
    from squeezelab.models import create_model

    rows = []
    for label, model, options, default_epochs in DEMO_MODELS:
        start = time.perf_counter()
        n_epochs = epochs or default_epochs
        cfg = config_from_dict(demo_config(model, options, epochs=n_epochs, seed=seed, runs_dir=runs_dir,
                                           threads=threads))
        run_dir = fit(cfg, progress=progress)
        final = json.loads((Path(run_dir) / "summary.json").read_text())["final"]
        net = create_model(model, num_classes=10, **options)
        rows.append(DemoRow(label, model, final["top1"], final["top5"], n_epochs, count_params(net), size_bytes(net),
                            time.perf_counter() - start, str(run_dir)))
    options = DEMO_MODELS[0][2]
    rows.insert(1, compress_demo(rows[0], options, epochs=epochs, seed=seed, runs_dir=runs_dir, threads=threads,
                                 progress=progress))
    if not keep_checkpoints:
        trim_runs(rows)
    return rows


def trim_runs(rows: list[DemoRow]) -> int:
    """Keep what a demo leaves small (it left 555 MB, mostly AlexNet's checkpoints with Adam's state):
    checkpoints over 10 MB (AlexNet's: 94 MB of weights, 3x that with Adam's state) are deleted;
    config, metrics, summary, the SqueezeNet runs' checkpoints and model.sqz stay (~25 MB). Returns
    the bytes freed."""
    freed = 0
    for row in rows:
        for path in sorted(Path(row.run_dir).rglob("*.safetensors")):
            if path.stat().st_size > 10_000_000:
                freed += path.stat().st_size
                path.unlink()
    return freed


def compress_demo(trained: DemoRow, options: dict, *, epochs: int | None, seed: int, runs_dir: str,
                  threads: int | None, progress: bool) -> DemoRow:
    """DEMO_COMPRESSION applied to the trained SqueezeNet's run; -> the .sqz row of the table."""
    from squeezelab.config import compress_recipe_from_dict
    from squeezelab.jobs.compress import compress

    start = time.perf_counter()
    base = demo_config(trained.model, options, epochs=1, seed=seed, runs_dir=runs_dir, threads=threads)
    base.pop("output")
    raw = {**base, **DEMO_COMPRESSION, "weights": str(Path(trained.run_dir) / "last.safetensors")}
    sets = [f"stages.{i}.train.epochs={epochs}" for i in range(len(raw["stages"]))] if epochs else []
    out = Path(runs_dir) / f"{Path(trained.run_dir).name}-compressed"
    report = compress(compress_recipe_from_dict(raw, overrides=sets), out, progress=progress)
    after = report["accuracy"]["after"]
    stage_epochs = sum(c.train.epochs for _, c in compress_recipe_from_dict(raw, overrides=sets).stages)
    return DemoRow("  compressed (.sqz)", trained.model, after["top1"], after["top5"], stage_epochs,
                   trained.params, report["file_bytes"], time.perf_counter() - start, str(out), compressed=True)


def format_table(rows: list[DemoRow]) -> str:
    """Side-by-side table, plus the parameter and size ratios of SqueezeNet (and its .sqz) to AlexNet."""
    lines = [f"{'model':<30} {'test top-1':>10} {'params':>12} {'size':>15} {'epochs':>6} {'train s':>8}"]
    for r in rows:
        size = f"{r.size_bytes / 1e6:.3f} MB .sqz" if r.compressed else f"{r.size_bytes / 1e6:.2f} MB fp32"
        lines.append(f"{r.label:<30} {r.top1:>10.2%} {r.params:>12,} {size:>15} {r.epochs:>6} {r.seconds:>8.0f}")
    sq, alex = rows[0], rows[-1]
    lines.append(
        f"{sq.label} has {alex.params / sq.params:.0f}x fewer parameters than {alex.label} "
        f"({sq.size_bytes / 1e6:.2f} MB vs {alex.size_bytes / 1e6:.1f} MB fp32); "
        f"test accuracy {sq.top1:.1%} vs {alex.top1:.1%} on 360 real handwritten digits."
    )
    small = next((r for r in rows if r.compressed), None)
    if small is not None:
        lines.append(
            f"Deep Compression (prune, share weights, entropy-code) makes it a {small.size_bytes / 1e3:.0f} KB file: "
            f"{sq.size_bytes / small.size_bytes:.1f}x smaller than its fp32 weights and "
            f"{alex.size_bytes / small.size_bytes:.0f}x smaller than AlexNet's, at {small.top1:.1%} test accuracy "
            f"({100 * (small.top1 - sq.top1):+.2f} points).")
    return "\n".join(lines)
