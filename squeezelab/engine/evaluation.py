"""``evaluate_weights``: weights file / run folder + dataset -> top-1, top-5, loss (``squeezelab eval``).

The model name, its options, num_classes and the preprocessing preset come from the weights' metadata
when it has them (e.g. the authors' ``.net`` file says squeezenet1_0 in Caffe form with the ``caffe``
preset: BGR, 0..255 minus the mean), otherwise from the command line and the dataset.
"""

from __future__ import annotations

import time

import torch

from squeezelab import runtime
from squeezelab.errors import ConfigError


def evaluate_weights(weights: str, dataset: str, *, data_dir: str | None = None, split: str | None = None,
                     model: str | None = None, preset: str | None = None, options: dict | None = None,
                     batch_size: int = 256, device: str = "auto", amp: str = "off",
                     split_scheme: str | None = None, val_fraction: float | None = None,
                     seed: int | None = None, download: bool = False, class_map: str | None = None) -> dict:
    """-> {"top1", "top5", "loss", "n", "seconds", "model", "dataset", "split", "preset"} (fractions).

    ``amp`` is off (fp32) by default so that a score is a property of the weights, not of the machine:
    with bf16 autocast the authors' ImageNet file scored 214/300 on a CPU with native bf16 (AMX) and
    215/300 in fp32, which is what the paper's numbers and other machines reproduce.

    ``split_scheme`` / ``val_fraction`` / ``seed`` default to those of the run that trained the weights
    when it trained on this dataset (a report-003 pooled split must be scored on its own test part).
    ``class_map``: a class list the dataset's labels are mapped onto (Tiny ImageNet's 200 wnids onto an
    ImageNet model's 1000 with synset_words.txt)."""
    from squeezelab.data import default_preset_for, get_spec, load_dataset
    from squeezelab.weights import load_weights

    w = load_weights(weights)
    name = _model_name(model, w.model_name)
    preset = preset or w.preset or default_preset_for(dataset)
    scheme, fraction, seed = _split_settings(w, dataset, split_scheme, val_fraction, seed)
    split = split or ("test" if scheme == "pooled" else get_spec(dataset).heldout)
    data = load_dataset(dataset, data_dir, split, preset=preset, split_scheme=scheme, val_fraction=fraction,
                        seed=seed, download=download, class_map=class_map)
    net = model_for(w, data.num_classes, options, name, declared=getattr(data, "classes_declared", True))
    dev = runtime.choose_device(device, where="--device")
    t = time.perf_counter()
    result = _run(net, data, preset, dev, batch_size, amp)
    result["seconds"] = round(time.perf_counter() - t, 3)
    return {**result, "model": name, "dataset": dataset, "split": split, "preset": preset}


def _split_settings(w, dataset: str, scheme: str | None, fraction: float | None,
                    seed: int | None) -> tuple[str, float, int]:
    trained = w.data_split if w.data_split and w.data_split.get("dataset") == dataset else {}
    scheme = scheme or trained.get("split_scheme") or "official"
    fraction = fraction if fraction is not None else float(trained.get("val_fraction") or 0.0)
    seed = seed if seed is not None else int(trained.get("seed") or 0)
    return scheme, (fraction if scheme == "pooled" else 0.0), seed


def _model_name(given: str | None, from_weights: str | None) -> str:
    if given and from_weights and given != from_weights:
        raise ConfigError(f"--model {given} but the weights are for {from_weights}")
    if not (given or from_weights):
        raise ConfigError("the weights do not name their model: pass --model")
    return given or from_weights


def model_for(w, dataset_classes: int, options: dict | None = None, name: str | None = None,
              declared: bool = True) -> torch.nn.Module:
    """``weights.model_from_weights`` for scoring on a dataset of ``dataset_classes`` classes: refused
    unless its labels index the weights' classes. ``declared`` False: the dataset names no classes (its
    count is only its largest label + 1), so it fits any weights with at least that many classes."""
    from squeezelab.weights import classes_fit, model_from_weights

    num_classes = w.num_classes or dataset_classes
    if not classes_fit(dataset_classes, num_classes, declared):  # label i is not class i: 0% means nothing
        raise ConfigError(f"the weights have {num_classes} classes and the dataset {dataset_classes}: their labels "
                          f"do not correspond; fine-tune first (squeezelab transfer, or train with model.weights), "
                          f"or map the dataset onto the weights' classes (--class-map / data.class_map)")
    return model_from_weights(w, name=name, options=options, num_classes=num_classes)


def _run(net: torch.nn.Module, data, preset: str, device: torch.device, batch_size: int, amp: str) -> dict:
    from squeezelab.data import get_preset
    from squeezelab.engine.data_io import eval_loader
    from squeezelab.engine.loop import evaluate

    cl = runtime.resolve_channels_last("auto", device)
    net = net.to(device)
    net = net.to(memory_format=torch.channels_last) if cl else net
    loader = eval_loader(data, batch_size, device, runtime.DistInfo())
    return evaluate(net, loader, get_preset(preset), device, amp=amp, channels_last=cl)
