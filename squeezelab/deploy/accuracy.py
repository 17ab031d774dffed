"""Top-1 / top-5 (and the top-1 predictions) of an exported file (any backend) or of torch weights on a
dataset split, preprocessed as the file's metadata / the weights say, batch by batch over the same images."""

from __future__ import annotations

import numpy as np
import torch


def file_accuracy(path, dataset: str, data_dir: str | None, split: str | None = None, *, loaded=None,
                  batch: int = 64) -> dict:
    """-> {"top1", "top5", "n", "correct", "predictions"} (predictions: top-1 class per image) of an
    exported file in its runtime (or ``loaded``), preprocessed as its metadata says."""
    from squeezelab.deploy.backends import check_metadata, load_file

    loaded = loaded or load_file(path)
    preset = check_metadata(path, loaded.meta)["preset"]["name"]
    return _score(loaded.run, preset, dataset, data_dir, split, batch)


def torch_accuracy(weights: str, dataset: str, data_dir: str | None, split: str | None = None, *,
                   model: str | None = None, batch: int = 64) -> dict:
    """The same for torch (fp32, eval mode) with any ``--weights``."""
    from squeezelab.deploy.backends.torch_eager import runner
    from squeezelab.deploy.graph import load_model

    net, _, preset = load_model(weights, model)
    return _score(runner(net), preset, dataset, data_dir, split, batch)


def _score(run, preset_name: str, dataset: str, data_dir, split, batch: int) -> dict:
    from squeezelab.data import get_preset, get_spec, load_dataset

    preset = get_preset(preset_name)
    data = load_dataset(dataset, data_dir, split or get_spec(dataset).heldout, preset=preset.name)
    top1 = top5 = 0
    preds = []
    for i in range(0, len(data), batch):
        logits = run(preset.eval(data.images[i:i + batch]).numpy())
        if i == 0:
            _check_classes(logits.shape[-1], data)
        y = data.labels[i:i + batch].numpy()
        best = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(axis=1).sum())
        preds.append(best[:, 0])
    n = len(data)
    return {"top1": top1 / n, "top5": top5 / n, "n": n, "correct": top1,
            "predictions": torch.from_numpy(np.concatenate(preds)) if preds else torch.zeros(0)}


def _check_classes(model_classes: int, data) -> None:
    """The rule of every place a dataset meets weights (weights.classes_fit)."""
    from squeezelab.errors import ConfigError
    from squeezelab.weights import classes_fit

    if not classes_fit(data.num_classes, model_classes, getattr(data, "classes_declared", True)):
        raise ConfigError(f"the model has {model_classes} classes and the dataset {data.num_classes}: their labels "
                          f"do not correspond")
