"""Datasets and preprocessing: one registry, offline, formats exactly as users download them.

Public API (what the engine, CLI and pretrained code use)::

    from squeezelab.data import load_dataset, list_datasets, get_preset, list_presets, TensorLoader

    train = load_dataset("cifar10", "~/data", "train", val_fraction=0.1, seed=0)  # ImageSet, uint8 NCHW
    preset = get_preset(default_preset_for("cifar10"))                            # "small"
    loader = TensorLoader(train.images, train.labels, 512, shuffle=True, drop_last=True, device="cuda", seed=0)
    for x, y in loader:
        logits = model(preset.train(x, generator=g))  # batched augmentation on the GPU

Datasets: cifar10, cifar100, tiny-imagenet, imagefolder, image-list, digits (see each module).
Presets: report000, report001, report003, report004, caffe, small, tinyimagenet64, digits
(see ``transforms``). Decoded image folders are cached under $SQUEEZELAB_CACHE or ~/.cache/squeezelab.
"""

from squeezelab.data.registry import DatasetSpec, get_spec, list_datasets, load_dataset, register  # noqa: I001

# Importing the dataset modules registers them (the registry must exist first).
from squeezelab.data import cifar, digits, folders, tinyimagenet  # noqa: F401,E402
from squeezelab.data.decode import DecodePolicy
from squeezelab.data.imageset import ImageSet, LazyImageSet
from squeezelab.data.loader import TensorLoader
from squeezelab.data.transforms import Preset, default_preset_for, get_preset, list_presets

__all__ = [
    "DatasetSpec", "DecodePolicy", "ImageSet", "LazyImageSet", "Preset", "TensorLoader",
    "default_preset_for", "get_preset", "get_spec", "list_datasets", "list_presets", "load_dataset", "register",
]
