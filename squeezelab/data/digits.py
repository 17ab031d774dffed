"""The 1,797 real 8x8 handwritten digits that scikit-learn ships: the built-in dataset that needs no
download and no data directory (demos, smoke tests, CI).

Pixels 0..16 are scaled to uint8 0..255 (x * 255 / 16, rounded) and repeated to 3 channels so every
model and preset takes them like any RGB dataset. The train/test split is fixed (stratified 80/20,
random_state 0: 1,437 / 360) so results are comparable across runs; ``val_fraction`` carves a
validation split from train.
"""

from __future__ import annotations

import numpy as np
import torch

from squeezelab.data.imageset import ImageSet
from squeezelab.data.registry import DatasetSpec, register

TEST_FRACTION, SPLIT_SEED = 0.2, 0


def build(root, split: str) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8]
    labels = bunch.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    idx = np.sort(train_idx if split == "train" else test_idx)
    images = torch.from_numpy(pixels[idx])[:, None].expand(-1, 3, -1, -1).contiguous()
    return ImageSet(images, torch.from_numpy(labels[idx]), [str(c) for c in bunch.target_names], "digits", split)


register(DatasetSpec(
    name="digits", splits=("train", "test"), heldout="test", build=build, needs_data_dir=False,
    description="scikit-learn's 8x8 digits (built in)",
))
