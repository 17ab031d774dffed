"""Wall-time estimate of a study on this machine, for ``sweep --dry-run`` and for the report.

FLOPs alone do not tell seconds: on a 2-core CPU SqueezeNet v1.0 and AlexNet at 64 px train at 250 and
135 img/s for a 1:5.5 FLOP ratio (AlexNet's FC layers run near peak, SqueezeNet's small convolutions
do not). So each distinct model of the study is timed for a few SGD steps here, on random data of its
input size, at the batch size, precision and threads its trials will use (one worker's share of the
cores when several workers share them); the run's images x epochs then give its seconds, and the
per-epoch evaluation passes (forward only, about a third of a training step per image) are added.
"""

from __future__ import annotations

import time

from squeezelab import runtime

TIMED_STEPS = 3


def images_per_epoch(cfg) -> tuple[int, int]:
    """(training images, per-epoch evaluation images) of a config, counted from the dataset's listing
    (nothing decoded); a carved validation split is counted by its fraction."""
    from squeezelab.data import get_spec
    from squeezelab.data.registry import count_images

    d = cfg.data
    spec = get_spec(d.dataset)
    pool = count_images(d.dataset, d.data_dir)
    if d.val_fraction > 0 and d.split_scheme == "pooled":
        pool += count_images(d.dataset, d.data_dir, spec.heldout)
        val = round(pool * d.val_fraction)
        train = pool - 2 * val
    elif d.val_fraction > 0:
        val = round(pool * d.val_fraction)
        train = pool - val
    else:
        train, val = pool, count_images(d.dataset, d.data_dir, d.val_split or spec.heldout)
    if d.limit:
        train, val = min(train, d.limit), min(val, d.limit)
    return train, val


def step_seconds_per_image(cfg, threads: int) -> float:
    """Measured seconds per training image of the config's model: the step `bench train` times for its
    network-alone figure (forward + backward + SGD, at the config's precision and layout)."""
    import torch

    from squeezelab.data import default_preset_for, get_preset
    from squeezelab.engine.bench import bench_model, sgd_step
    from squeezelab.experiments.measure import NUM_CLASSES

    dev = torch.device("cpu") if cfg.train.device in ("auto", "cpu") and not torch.cuda.is_available() \
        else runtime.choose_device(cfg.train.device)
    size = get_preset(cfg.data.preset or default_preset_for(cfg.data.dataset)).input_size
    classes = cfg.model.num_classes or NUM_CLASSES.get(cfg.data.dataset, 1000)
    dtype, cl = runtime.resolve_amp(cfg.train.amp, dev), runtime.resolve_channels_last(cfg.train.channels_last, dev)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step = sgd_step(bench_model(cfg.model.name, dict(cfg.model.options), classes, dev, cl), dev, dtype)
        bs = cfg.data.batch_size
        x = torch.randn(bs, 3, size, size, device=dev)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, classes, (bs,), device=dev)
        step(x, y)  # the first step allocates and picks kernels
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step(x, y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t) / (TIMED_STEPS * bs)
    finally:
        torch.set_num_threads(old)


def estimate(study, extra: dict | None, workers: int, rows: list[dict]) -> dict:
    """{"seconds": the study's wall time with ``workers`` workers, "per_run": {name: seconds},
    "threads": per worker}: every non-pruned row of ``sweep.plan`` timed by its model's measured step."""
    cores = runtime.available_cores()
    first = study.config(rows[0]["trial"], extra) if rows else None
    threads = (first.train.threads if first is not None and first.train.threads else max(1, cores // workers))
    per_image: dict[str, float] = {}
    per_run: dict[str, float] = {}
    for r in rows:
        if r["pruned"]:
            continue
        cfg = study.config(r["trial"], extra)
        key = repr((cfg.model.name, sorted(cfg.model.options.items()), cfg.data.batch_size, cfg.data.preset))
        if key not in per_image:
            per_image[key] = step_seconds_per_image(cfg, threads)
        train, val = images_per_epoch(cfg)
        epochs = cfg.train.epochs
        images = cfg.train.max_steps * cfg.data.batch_size if cfg.train.max_steps else train * epochs
        per_run[r["name"]] = per_image[key] * (images + val * epochs / 3)
    busy = min(workers, max(1, cores // threads))  # workers beyond the cores wait on each other
    return {"seconds": sum(per_run.values()) / busy, "per_run": per_run, "threads": threads, "workers": workers}
