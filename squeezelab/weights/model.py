"""Weights -> model, once for every command: ``model_from_weights`` builds the model a weights file
describes (what the command line or config adds on top) and loads it, checking every name and shape;
``classes_fit`` is the one rule for whether a dataset's labels index a model's classes.

``eval``, ``predict``, ``export``, ``bench infer``, the accuracy checks, ``convert``, ``transfer``,
``sensitivity`` and training (its initial weights, its teacher, its kept checkpoint) all come here, so a
weights file means the same model everywhere.
"""

from __future__ import annotations

from torch import nn

from squeezelab.errors import ConfigError, WeightsError
from squeezelab.weights.loading import LoadedWeights, load_into


def model_from_weights(w: LoadedWeights, *, name: str | None = None, options: dict | None = None,
                       num_classes: int | None = None, load: bool = True) -> nn.Module:
    """The model ``w`` describes, with ``w``'s weights in it (``load`` False: freshly initialised).

    ``name``: the model asked for (``--model`` / ``model.name``): it must be the file's own when the
    file names one, and is needed when it does not (a plain torch state dict). ``options`` are laid
    over the file's (``--option`` / ``model.options``). ``num_classes``: the count the caller expects
    (a dataset's, a run's); the file's own count wins when it has one, and a different expected count
    is refused here in one line rather than as a shape mismatch."""
    if name and w.model_name and name != w.model_name:
        raise ConfigError(f"--model {name} but the weights are for {w.model_name}")
    name = name or w.model_name
    if not name:
        raise ConfigError(f"{_where(w)}the weights do not name their model: pass --model")
    if w.num_classes is not None and num_classes is not None and w.num_classes != num_classes:
        raise ConfigError(f"{_where(w)}the weights have {w.num_classes} classes, not the {num_classes} asked for")
    classes = w.num_classes if w.num_classes is not None else num_classes
    if classes is None:
        raise WeightsError(f"{_where(w)}the weights do not say how many classes they have")
    from squeezelab.models import create_model

    # sized: the file's own model, its weights in memory already, fits (no meta-device sizing); options
    # laid on top may describe another size, so that model is sized first.
    model = create_model(name, num_classes=classes, sized=load and not options,
                         **{**dict(w.model_options), **dict(options or {})})
    return load_into(model, w) if load else model


def classes_fit(dataset_classes: int, model_classes: int, declared: bool = True) -> bool:
    """Whether a dataset's labels index a model's classes: the same count for a dataset that declares
    its classes (a class-list file, a format with its own), at most as many for one that does not (a
    labelled subset of ImageNet is scored with the weights' 1000)."""
    return dataset_classes == model_classes or (not declared and dataset_classes <= model_classes)


def _where(w: LoadedWeights) -> str:
    return f"{w.path}: " if w.path is not None else ""
