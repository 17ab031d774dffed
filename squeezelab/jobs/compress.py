"""``squeezelab compress``: Deep Compression as a pipeline of ordinary training runs, then a .sqz file.

Han et al. (2016) compress in stages — prune and retrain, then share weights and retrain the
centroids, then Huffman-code — and so does a recipe (``config.CompressRecipe``): each stage is a
training run (``runs``-style folder ``<out>/<i>-<name>/``) that starts from the previous stage's
weights with its own ``prune`` / ``share`` / ``distill`` sections; a stage with ``train.epochs: 0``
applies its pruning / sharing without retraining. ``distill.teacher: source`` is the uncompressed
model the recipe starts from. The result is coded losslessly into ``<out>/model.sqz``, read back
through the same loader every command uses, and measured; ``report.json`` / ``report.md`` hold the
per-layer table (paper Tables 1-2) and the accuracy before and after.

Running the same command again continues: finished stages are kept, an interrupted one resumes from
its last checkpoint, and the recipe must be the one the folder was started with.
"""

from __future__ import annotations

import errno

import dataclasses
import json
import time
from pathlib import Path

from squeezelab import runtime
from squeezelab.config import CompressRecipe, OneShotRecipe, RunConfig, config_to_dict
from squeezelab.engine.metrics import log
from squeezelab.errors import ConfigError, WriteError

ALEXNET_PAPER_BYTES = 240e6  # paper Table 2: AlexNet, 240 MB uncompressed
SOURCE = "source"


def compress(recipe: CompressRecipe, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Run (or continue) the recipe in ``out_dir``; returns the report (also written there)."""
    out = Path(out_dir)
    check_recipe(recipe)
    _claim(out, recipe)
    current, t0 = recipe.weights, time.perf_counter()
    stages = []
    for i, (name, cfg) in enumerate(recipe.stages, 1):
        stage_dir = out / f"{i}-{name}"
        cfg = _stage_config(cfg, current, recipe.weights, stage_dir)
        current = str(_run_stage(cfg, stage_dir, recipe.select, progress))
        stages.append({"name": name, "dir": str(stage_dir), "weights": current})
        if progress:
            log(f"stage {i}/{len(recipe.stages)} {name}: {current}")
    sqz_path = out / "model.sqz"
    _encode(current, sqz_path, recipe)
    report = build_report(sqz_path, recipe, source=recipe.weights, stages=stages)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    runtime.atomic_write_json(out / "report.json", report)
    runtime.atomic_write_text(out / "report.md", format_report(report))
    return report


def check_recipe(recipe: CompressRecipe) -> None:
    """Every stage's layer patterns and values, checked against the model before anything trains (a
    typo in the last stage must not surface after an hour of the first)."""
    import torch

    from squeezelab.compression import methods
    from squeezelab.models import create_model

    spec = _source_spec(recipe)
    for name, cfg in recipe.stages:
        m = spec or {"name": cfg.model.name, "num_classes": cfg.model.num_classes or 10, "options": {}}
        with torch.device("meta"):
            model = create_model(m["name"], num_classes=m["num_classes"] or 10,
                                 **{**m["options"], **dict(cfg.model.options)})
        where = f"stage {name}: "
        try:
            methods.check_one_per_run(cfg, "stage")
            methods.check_model(cfg, model)
            if cfg.distill.enabled and (cfg.distill.temperature <= 0 or not 0 <= cfg.distill.alpha <= 1):
                raise ConfigError("distill: temperature must be > 0 and alpha in [0, 1]")
        except ConfigError as err:
            raise ConfigError(where + str(err)) from None


def _source_spec(recipe: CompressRecipe) -> dict | None:
    if recipe.weights is None:
        return None
    from squeezelab.weights import load_weights

    return load_weights(recipe.weights).model_spec


def _claim(out: Path, recipe: CompressRecipe) -> None:
    """The folder belongs to one recipe: a second run with another recipe must not mix into it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG):  # the path given: a user's mistake
            raise ConfigError(f"cannot create the output folder {out}: {err.strerror or err}") from None
        raise WriteError.of(out, err) from None  # read-only, no permission, disk full: the environment (exit 1)
    marker = out / "recipe.json"
    wanted = json.dumps(recipe.raw, indent=2, sort_keys=True)
    if marker.is_file():
        if marker.read_text() != wanted:
            raise ConfigError(f"{out} holds a compression with another recipe ({marker}); use a new -o folder")
        return
    runtime.atomic_write_text(marker, wanted)


def _stage_config(cfg: RunConfig, current: str | None, source: str | None, stage_dir: Path) -> RunConfig:
    model = dataclasses.replace(cfg.model, weights=current) if current else cfg.model
    distill = cfg.distill
    if distill.teacher == SOURCE:
        if source is None:
            raise ConfigError("distill.teacher: source needs the recipe's weights (the model being compressed)")
        distill = dataclasses.replace(distill, teacher=source)
    output = dataclasses.replace(cfg.output, run_dir=str(stage_dir))
    return dataclasses.replace(cfg, model=model, distill=distill, output=output)


def _run_stage(cfg: RunConfig, stage_dir: Path, select: str, progress: bool) -> Path:
    """Train the stage (or continue it); -> the checkpoint the next stage starts from."""
    from squeezelab.compression import methods

    if cfg.train.epochs == 0 and not any(m.needs_data(s) for m, s in methods.enabled(cfg)):  # no data needed
        return _one_shot_stage(cfg, stage_dir)
    from squeezelab.engine import fit

    status = runtime.run_status(stage_dir)
    if status != "finished":
        resume = stage_dir if (stage_dir / "last.safetensors").is_file() else None
        if resume is None and stage_dir.exists():
            _clear_unstarted(stage_dir)
        fit(cfg, resume=resume, progress=progress)
    best = stage_dir / "best.safetensors"
    return best if select == "best" and best.is_file() else stage_dir / "last.safetensors"


def _clear_unstarted(stage_dir: Path) -> None:
    """A stage folder with no checkpoint yet (killed while loading data) is started afresh."""
    for child in stage_dir.iterdir():
        if child.is_file():
            child.unlink()


def _one_shot_stage(cfg: RunConfig, stage_dir: Path) -> Path:
    """``train.epochs: 0``: the stage's pruning / sharing applied at once, saved as a checkpoint."""
    from squeezelab.weights import load_weights
    from squeezelab.weights.checkpoint import save_checkpoint
    from squeezelab.weights.convert import apply_one_shot

    dst = stage_dir / "last.safetensors"
    if dst.is_file():
        return dst
    if cfg.model.weights is None:
        raise ConfigError("a stage with train.epochs 0 needs weights to start from (the recipe's weights)")
    weights = load_weights(cfg.model.weights)
    model = apply_one_shot(weights, cfg, seed=cfg.train.seed)  # (a RunConfig has every method's section)
    stage_dir.mkdir(parents=True, exist_ok=True)
    meta = {"model": model.model_spec, "preset": weights.preset, "classes": weights.classes,
            "config": config_to_dict(cfg), "source": weights.source}
    save_checkpoint(dst, model, meta=meta)
    return dst


def _encode(weights_path: str, dst: Path, recipe: CompressRecipe) -> None:
    from squeezelab.weights import load_weights
    from squeezelab.weights.convert import write_sqz_file

    weights = load_weights(weights_path)
    code = recipe.code
    one_shot = OneShotRecipe(code=code)
    write_sqz_file(dst, weights, one_shot, provenance={"compress_recipe": recipe.raw,
                                                      "compressed_from": recipe.weights})


# ---------------------------------------------------------------------------------------- report


def build_report(sqz_path: Path, recipe: CompressRecipe | None = None, *, source: str | None = None,
                 stages: list | None = None, eval_cfg=None) -> dict:
    """Per-layer sizes of the .sqz file, totals and ratios; accuracy of source and result when the
    recipe (or ``eval_cfg``) names a dataset."""
    from squeezelab.weights import sqz

    f = sqz.read_sqz(sqz_path.read_bytes())
    layers = sqz.layer_table(f)
    file_bytes = sqz_path.stat().st_size
    fp32 = sum(r["fp32_bytes"] for r in layers)
    report = {"file": str(sqz_path), "file_bytes": file_bytes, "model": f.header.get("model"),
              "layers": layers, "params": sum(r["params"] for r in layers), "fp32_bytes": fp32,
              "payload_bytes": sum(r["stored_bytes"] for r in layers),
              "ratio_vs_fp32": fp32 / file_bytes, "ratio_vs_alexnet_240mb": ALEXNET_PAPER_BYTES / file_bytes,
              "stages": stages or []}
    evaluation = _eval_target(recipe, eval_cfg)
    if evaluation is not None:
        report["accuracy"] = _accuracy(evaluation, source, sqz_path)
    return report


def _eval_target(recipe: CompressRecipe | None, eval_cfg) -> dict | None:
    e = eval_cfg or (recipe.eval if recipe is not None else None)
    if e is not None and not e.enabled:
        return None
    data = recipe.stages[-1][1].data if recipe is not None and recipe.stages else None
    dataset = (e.dataset if e is not None else None) or (data.dataset if data is not None else None)
    if dataset is None:
        return None
    data_dir = (e.data_dir if e is not None else None) or (data.data_dir if data is not None and
                                                             data.dataset == dataset else None)
    return {"dataset": dataset, "data_dir": data_dir, "split": e.split if e is not None else None,
            "batch_size": e.batch_size if e is not None else 256}


def _accuracy(target: dict, source: str | None, sqz_path: Path) -> dict:
    from squeezelab.engine.evaluation import evaluate_weights

    def score(weights: str) -> dict:
        r = evaluate_weights(weights, target["dataset"], data_dir=target["data_dir"], split=target["split"],
                             batch_size=target["batch_size"])
        return {k: r[k] for k in ("top1", "top5", "n", "loss", "split")}

    out = {"dataset": target["dataset"], "after": score(str(sqz_path))}
    if source is not None:
        out["before"] = score(source)
        out["top1_drop_points"] = 100 * (out["before"]["top1"] - out["after"]["top1"])
    return out


def format_report(report: dict) -> str:
    """Markdown: the per-layer table (paper Table 1's columns), totals, ratios, accuracy."""
    lines = [f"# {Path(report['file']).name}: {report['file_bytes']:,} bytes", "",
             "| layer | params | density | bits | index bits | fp32 bytes | stored bytes | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["layers"]:
        density = "" if r["density"] is None else f"{100 * r['density']:.1f}%"
        lines.append(f"| {r['layer']} | {r['params']:,} | {density} | {r['bits'] or ''} | {r['index_bits'] or ''} | "
                     f"{r['fp32_bytes']:,} | {r['stored_bytes']:,} | {r['fp32_bytes'] / max(1, r['stored_bytes']):.1f}x |")
    lines += [f"| **total** | {report['params']:,} | | | | {report['fp32_bytes']:,} | {report['payload_bytes']:,} "
              f"(file {report['file_bytes']:,}) | {report['ratio_vs_fp32']:.1f}x |", "",
              f"{report['ratio_vs_fp32']:.1f}x smaller than fp32 ({report['fp32_bytes'] / 1e6:.2f} MB -> "
              f"{report['file_bytes'] / 1e6:.3f} MB); {report['ratio_vs_alexnet_240mb']:.0f}x smaller than AlexNet's "
              "240 MB (paper Table 2). Stored bytes are exact: codebook + relative indices + codes of each layer; "
              "the file adds its header, table and checksum."]
    acc = report.get("accuracy")
    if acc:
        after = acc["after"]
        line = f"Accuracy on {acc['dataset']}/{after['split']} ({after['n']} images): "
        if "before" in acc:
            b = acc["before"]
            line += (f"top-1 {100 * b['top1']:.2f}% -> {100 * after['top1']:.2f}% "
                     f"({-acc['top1_drop_points']:+.2f} points), top-5 {100 * b['top5']:.2f}% -> "
                     f"{100 * after['top5']:.2f}%.")
        else:
            line += f"top-1 {100 * after['top1']:.2f}%, top-5 {100 * after['top5']:.2f}%."
        lines += ["", line]
    return "\n".join(lines) + "\n"
