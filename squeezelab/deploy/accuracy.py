"""Top-1 / top-5 (and the top-1 predictions) of an ONNX file or of torch weights on a dataset split,
preprocessed as the file's metadata / the weights say, batch by batch over the same images."""

from __future__ import annotations

import numpy as np
import torch

from squeezelab.errors import WeightsError


def onnx_accuracy(path, dataset: str, data_dir: str | None, split: str | None = None, *, sess=None,
                  batch: int = 64) -> dict:
    """-> {"top1", "top5", "n", "correct", "predictions"} (predictions: top-1 class per image)."""
    from squeezelab.deploy.export import onnx_metadata, session

    from squeezelab.data import get_preset
    from squeezelab.deploy.export import check_onnx_input

    sess = sess or session(path)
    meta = onnx_metadata(path)
    if "preset" not in meta:
        raise WeightsError(f"{path} was not exported by squeezelab (no preset in its metadata)")
    preset = meta["preset"]["name"]
    check_onnx_input(sess, path, get_preset(preset).input_size, (1, batch))
    name = sess.get_inputs()[0].name
    return _score(lambda x: sess.run(None, {name: x.numpy()})[0], preset, dataset, data_dir, split, batch)


def torch_accuracy(weights: str, dataset: str, data_dir: str | None, split: str | None = None, *,
                   model: str | None = None, batch: int = 64) -> dict:
    """The same for torch (fp32, eval mode) with any ``--weights``."""
    from squeezelab.deploy.export import load_model

    net, _, preset = load_model(weights, model)

    def run(x):
        with torch.inference_mode():
            return net(x).float().numpy()

    return _score(run, preset, dataset, data_dir, split, batch)


def _score(run, preset_name: str, dataset: str, data_dir, split, batch: int) -> dict:
    from squeezelab.data import get_preset, get_spec, load_dataset

    preset = get_preset(preset_name)
    data = load_dataset(dataset, data_dir, split or get_spec(dataset).heldout, preset=preset.name)
    top1 = top5 = 0
    preds = []
    for i in range(0, len(data), batch):
        logits = run(preset.eval(data.images[i:i + batch]))
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
