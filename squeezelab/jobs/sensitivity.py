"""``squeezelab compress sensitivity``: accuracy vs density for each layer pruned alone.

Han et al. (2015, Fig. 6) prune one layer at a time, without retraining, to see how much each layer
tolerates; the curves are what per-layer densities are chosen from (the convolutions near the input
are the most sensitive). The dataset is decoded once and every (layer, density) pair is one
evaluation of a copy of the model, so the cost is layers x densities forward passes over the images.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from squeezelab import runtime

DEFAULT_DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def sensitivity(weights: str, dataset: str, *, data_dir: str | None = None, split: str | None = None,
                densities=DEFAULT_DENSITIES, layers=("*",), exclude=(), limit: int | None = None,
                batch_size: int = 256, device: str = "auto", progress: bool = True,
                val_fraction: float = 0.0, seed: int = 0) -> dict:
    """-> {"baseline": {"top1", "top5"}, "rows": [{"layer", "density", "top1", "top5"}], ...}.
    ``split="val"`` with ``val_fraction`` > 0: the part of train held out as the weights' run held it
    (same fraction and seed), so that densities are chosen on validation images, not test ones."""
    from squeezelab.compression.layers import weight_layers
    from squeezelab.compression.prune import magnitude_mask
    from squeezelab.engine.evaluation import model_for
    from squeezelab.engine.metrics import log
    from squeezelab.weights import load_weights

    w = load_weights(weights)
    data, preset = _data(w, dataset, data_dir, split, limit, val_fraction, seed)
    dev = runtime.choose_device(device, where="--device")
    channels_last = runtime.resolve_channels_last("auto", dev)  # 1.5x faster here, as in eval
    model = model_for(w, data.num_classes, declared=getattr(data, "classes_declared", True)).to(dev)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    score = _scorer(data, preset, dev, batch_size, channels_last)
    t0 = time.perf_counter()
    baseline = score(model)
    rows = []
    names = list(weight_layers(model, layers, exclude))
    modules = dict(model.named_modules())
    for i, name in enumerate(names, 1):
        weight = modules[name].weight
        original = weight.detach().clone()
        for density in densities:
            with torch.no_grad():  # this layer alone pruned, then put back as it was
                weight.copy_(original * magnitude_mask(original, float(density)))
            rows.append({"layer": name, "density": float(density), **score(model)})
        with torch.no_grad():
            weight.copy_(original)
        if progress:
            worst = min(r["top1"] for r in rows if r["layer"] == name)
            log(f"{i}/{len(names)} {name}: top-1 {100 * worst:.1f}% at the lowest density")
    return {"weights": str(weights), "dataset": dataset, "split": data.split, "n": len(data),
            "baseline": baseline, "densities": [float(d) for d in densities], "layers": names, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1)}


def _data(w, dataset: str, data_dir, split, limit, val_fraction: float, seed: int):
    from squeezelab.data import default_preset_for, get_spec, load_dataset

    preset = w.preset or default_preset_for(dataset)
    data = load_dataset(dataset, data_dir, split or get_spec(dataset).heldout, preset=preset,
                        val_fraction=val_fraction, seed=seed)
    if limit is not None and limit < len(data):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit]
        data = data.subset(order.sort().values, data.split)
    return data, preset


def _scorer(data, preset: str, device: torch.device, batch_size: int, channels_last: bool):
    from squeezelab.data import get_preset
    from squeezelab.engine.data_io import eval_loader
    from squeezelab.engine.loop import evaluate

    loader = eval_loader(data, batch_size, device, runtime.DistInfo())
    p = get_preset(preset)

    def score(model) -> dict:
        r = evaluate(model, loader, p, device, amp="off", channels_last=channels_last)
        return {"top1": r["top1"], "top5": r["top5"]}

    return score


def format_table(result: dict) -> str:
    """Layers x densities of top-1 (%), with the unpruned baseline."""
    ds = result["densities"]
    head = f"{'layer':<22}" + "".join(f"{d:>7.0%}" for d in ds)
    lines = [f"top-1 on {result['dataset']}/{result['split']} ({result['n']} images); unpruned "
             f"{100 * result['baseline']['top1']:.2f}%", head]
    for name in result["layers"]:
        cells = {r["density"]: r["top1"] for r in result["rows"] if r["layer"] == name}
        lines.append(f"{name:<22}" + "".join(f"{100 * cells[d]:>7.1f}" for d in ds))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """One curve per layer: top-1 vs density (headless matplotlib), the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    styles = {"squeeze": "-", "expand1x1": "--", "expand3x3": ":"}  # the layer's role, by line style
    for i, name in enumerate(result["layers"]):
        pts = sorted((r["density"], r["top1"]) for r in result["rows"] if r["layer"] == name)
        color = plt.cm.turbo(i / max(1, len(result["layers"]) - 1))  # network depth, by colour
        ax.plot([100 * d for d, _ in pts], [100 * a for _, a in pts], marker="o", ms=3, lw=1.2, color=color,
                ls=styles.get(name.rsplit(".", 1)[-1], "-."), label=name)
    ax.axhline(100 * result["baseline"]["top1"], color="k", ls="--", lw=1, label="unpruned")
    ax.set(xlabel="density (% of weights kept, this layer alone)", ylabel="top-1 (%)",
           title=f"Pruning sensitivity, {result['dataset']}/{result['split']} ({result['n']} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=3, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
