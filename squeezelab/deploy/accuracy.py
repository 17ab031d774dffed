"""Top-1 / top-5 of an ONNX file on a dataset split, preprocessed as the file's metadata says."""

from __future__ import annotations

import numpy as np
import torch


def onnx_accuracy(path, dataset: str, data_dir: str | None, split: str | None = None, *, sess=None,
                  batch: int = 64) -> dict:
    """-> {"top1", "top5", "n", "predictions"} (predictions: top-1 class per image, for agreement)."""
    from squeezelab.data import get_preset, get_spec, load_dataset
    from squeezelab.deploy.export import onnx_metadata, session

    sess = sess or session(path)
    preset = get_preset(onnx_metadata(path)["preset"]["name"])
    data = load_dataset(dataset, data_dir, split or get_spec(dataset).heldout, preset=preset.name)
    name = sess.get_inputs()[0].name
    top1 = top5 = 0
    preds = []
    for i in range(0, len(data), batch):
        x = preset.eval(data.images[i:i + batch]).numpy()
        y = data.labels[i:i + batch].numpy()
        logits = sess.run(None, {name: x})[0]
        best = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(axis=1).sum())
        preds.append(best[:, 0])
    n = len(data)
    return {"top1": top1 / n, "top5": top5 / n, "n": n, "correct": top1,
            "predictions": torch.from_numpy(np.concatenate(preds)) if preds else torch.zeros(0)}
