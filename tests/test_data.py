"""Datasets on the real data in ../shared/data (skipped when absent), the cache, TensorLoader, and one
clear DataError line for every kind of bad input. Tiny ImageNet is counted from the zip directories and
only a few of its images are decoded; the full decode is behind @pytest.mark.slow."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from tests.helpers import one_line
from squeezelab.data import TensorLoader, list_datasets, load_dataset, registry
from squeezelab.errors import ConfigError, DataError

TINY_ZIP1 = "tiny-imagenet-200.part1of4.zip"
# The library silences this torchvision 0.29 notice once per process; pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------- CIFAR


def _cifar_dir() -> Path:
    return shared_path("cifar-10-subset", "cifar-10-batches-py")


def test_cifar_subset_loads_with_the_files_labels():
    root = _cifar_dir()
    train, test = load_dataset("cifar10", root.parent, "train"), load_dataset("cifar10", root, "test")
    assert (len(train), len(test)) == (5085, 1017)
    assert train.images.shape == (5085, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and train.num_classes == 10
    expected = []
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "rb") as f:
            expected.append(pickle.load(f, encoding="latin1"))
    assert train.labels.tolist() == sum((d["labels"] for d in expected), [])
    row = expected[1]["data"][7]  # image 7 of batch 2: R, G, B planes of 32x32
    assert torch.equal(train.images[1017 + 7], torch.from_numpy(row.reshape(3, 32, 32)))
    assert train[3][1] == expected[0]["labels"][3]


def test_cifar_found_from_a_folder_of_datasets(shared_data):
    _cifar_dir()
    assert len(load_dataset("cifar10", shared_data, "test")) == 1017


def test_cifar_val_fraction_is_stratified_disjoint_and_seeded():
    root = _cifar_dir()
    tr = load_dataset("cifar10", root, "train", val_fraction=0.1, seed=0)
    va = load_dataset("cifar10", root, "val", val_fraction=0.1, seed=0)
    te = load_dataset("cifar10", root, "test", val_fraction=0.1, seed=0)
    full = load_dataset("cifar10", root, "train")
    assert len(tr) + len(va) == 5085 and len(te) == 1017 and abs(len(va) - 508) <= 5
    assert (tr.split, va.split) == ("train", "val")
    counts_full, counts_val = torch.bincount(full.labels, minlength=10), torch.bincount(va.labels, minlength=10)
    assert ((counts_val - counts_full * 0.1).abs() <= 1).all()
    # disjoint: images are distinct rows of the training set
    keys = lambda s: {bytes(im.numpy()) for im in s.images}  # noqa: E731
    assert not keys(tr) & keys(va)
    again = load_dataset("cifar10", root, "val", val_fraction=0.1, seed=0)
    other = load_dataset("cifar10", root, "val", val_fraction=0.1, seed=1)
    assert torch.equal(again.images, va.images) and not torch.equal(other.images, va.images)


def test_corrupt_cifar_pickle_names_the_file(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    shutil.copytree(_cifar_dir(), root)
    os.chmod(root / "data_batch_3", 0o644)
    data = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, "train")
    one_line(e, "data_batch_3", "CIFAR pickle")


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    shutil.copytree(_cifar_dir(), root)
    os.chmod(root / "data_batch_1", 0o644)
    (root / "data_batch_1").write_bytes(pickle.dumps({"data": os.getcwd}))  # a global outside numpy
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, "train")
    one_line(e, "data_batch_1", "refusing global")


def test_cifar100_python_folder_uses_fine_labels(tmp_path):
    """cifar-100-python/ written in the official format (pickled dicts with fine/coarse labels) from real
    CIFAR images; checks the reader, not the data."""
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    with open(_cifar_dir() / "test_batch", "rb") as f:
        src = pickle.load(f, encoding="latin1")
    fine = [(3 * y + 7) % 100 for y in src["labels"]]
    for name, sl in (("train", slice(0, 800)), ("test", slice(800, None))):
        batch = {b"data": src["data"][sl], b"fine_labels": fine[sl], b"coarse_labels": [0] * len(fine[sl])}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    train, test = load_dataset("cifar100", tmp_path, "train"), load_dataset("cifar100", root, "test")
    assert (len(train), len(test), train.num_classes) == (800, 217, 100)
    assert train.labels.tolist() == fine[:800] and train.classes[7] == "c7"
    assert torch.equal(test.images[0], torch.from_numpy(src["data"][800].reshape(3, 32, 32)))


# ----------------------------------------------------------------------------------- Tiny ImageNet


def _tiny_dir() -> Path:
    return shared_path("tiny-imagenet-200")


def test_tiny_imagenet_from_zip_parts_counts_and_classes(shared_data):
    _tiny_dir()
    train = load_dataset("tiny-imagenet", shared_data, "train", in_memory=False)
    val = load_dataset("tiny-imagenet", _tiny_dir(), "val", in_memory=False)
    assert (len(train), len(val), train.num_classes) == (100_000, 10_000, 200)
    wnids = zipfile.ZipFile(_tiny_dir() / TINY_ZIP1).read("tiny-imagenet-200/wnids.txt").decode().split()
    assert train.classes == wnids == val.classes
    assert torch.bincount(train.labels, minlength=200).eq(500).all()
    assert torch.bincount(val.labels, minlength=200).eq(50).all()


def test_tiny_imagenet_known_files_map_to_their_wnid():
    train = load_dataset("tiny-imagenet", _tiny_dir(), "train", in_memory=False)
    val = load_dataset("tiny-imagenet", _tiny_dir(), "val", in_memory=False)
    where = {train.describe(i).rsplit("/", 1)[1]: i for i in range(len(train))}
    for fname, wnid in [("n01443537_0.JPEG", "n01443537"), ("n04596742_499.JPEG", "n04596742"),
                        ("n02124075_123.JPEG", "n02124075")]:
        assert train.classes[int(train.labels[where[fname]])] == wnid
    # val_annotations.txt (part 1): val_0 is n03444034, val_1 n04067472; natural order puts val_0 first
    assert val.describe(0).endswith("val/images/val_0.JPEG") and val.describe(1).endswith("val_1.JPEG")
    assert [val.classes[int(c)] for c in val.labels[:2]] == ["n03444034", "n04067472"]
    assert val.describe(9999).endswith("val_9999.JPEG") and "part4of4" in val.describe(9999)


def test_tiny_imagenet_decodes_a_few_images_like_pil():
    val = load_dataset("tiny-imagenet", _tiny_dir(), "val", in_memory=False)
    zf = zipfile.ZipFile(_tiny_dir() / TINY_ZIP1)
    for i in (0, 1, 2):
        img, label = val[i]
        assert img.shape == (3, 64, 64) and img.dtype == torch.uint8 and label == int(val.labels[i])
        pil = Image.open(io.BytesIO(zf.read(val.describe(i).split(":", 1)[1]))).convert("RGB")
        assert torch.equal(img, torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))


def test_tiny_imagenet_lazy_set_works_in_dataloader_workers():
    val = load_dataset("tiny-imagenet", _tiny_dir(), "val", in_memory=False)
    sub = val.subset(torch.arange(0, 10_000, 1250), "val")  # 8 images spread over all 4 parts
    batches = list(torch.utils.data.DataLoader(sub, batch_size=4, num_workers=2))
    x = torch.cat([b[0] for b in batches])
    assert x.shape == (8, 3, 64, 64) and torch.equal(torch.cat([b[1] for b in batches]), sub.labels)
    assert torch.equal(x[3], sub[3][0])


def _write_tiny_tree(root: Path, per_class: dict[str, int]) -> None:
    """A small official-layout tree made of real Tiny ImageNet JPEGs from the zip."""
    zf = zipfile.ZipFile(_tiny_dir() / TINY_ZIP1)
    real = [n for n in zf.namelist() if n.endswith(".JPEG") and "/train/" in n][:20]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in per_class))
    ann, k = [], 0
    for w, n in per_class.items():
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(n):
            (root / "train" / w / "images" / f"{w}_{j}.JPEG").write_bytes(zf.read(real[k]))
            (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(zf.read(real[k]))
            ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63\n")
            k += 1
    (root / "val" / "val_annotations.txt").write_text("".join(ann))


def test_tiny_imagenet_extracted_tree_decodes_and_caches(tmp_path, cache):
    _write_tiny_tree(tmp_path / "tiny-imagenet-200", {"n02": 3, "n01": 2})
    for data_dir in (tmp_path, tmp_path / "tiny-imagenet-200"):
        train = load_dataset("tiny-imagenet", data_dir, "train", cache_dir=cache)
        assert train.images.shape == (5, 3, 64, 64) and train.classes == ["n02", "n01"]
        assert train.labels.tolist() == [0, 0, 0, 1, 1]
    val = load_dataset("tiny-imagenet", tmp_path, "val", cache_dir=cache)
    assert torch.equal(val.images, train.images) and val.labels.tolist() == [0, 0, 0, 1, 1]  # same JPEGs
    assert len(list(cache.glob("tiny-imagenet-*.safetensors"))) == 2


def test_tiny_imagenet_single_official_zip(tmp_path, cache):
    tree = tmp_path / "x" / "tiny-imagenet-200"
    _write_tiny_tree(tree, {"n05": 2, "n03": 1})
    with zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip", "w") as zf:
        for f in sorted(tree.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(tree.parent).as_posix())
    from_zip = load_dataset("tiny-imagenet", tmp_path, "train", cache_dir=cache)
    from_tree = load_dataset("tiny-imagenet", tree, "train", cache_dir=cache)
    assert torch.equal(from_zip.images, from_tree.images) and from_zip.labels.tolist() == [0, 0, 1]
    assert len(load_dataset("tiny-imagenet", tmp_path, "val", in_memory=False)) == 3


def test_tiny_imagenet_empty_class_is_a_data_error(tmp_path):
    _write_tiny_tree(tmp_path, {"n01": 2, "n02": 0})
    with pytest.raises(DataError) as e:
        load_dataset("tiny-imagenet", tmp_path, "train", cache_dir=False)
    one_line(e, "n02", "no images")


def test_tiny_imagenet_missing_or_corrupt_zip_parts(tmp_path):
    (tmp_path / TINY_ZIP1).symlink_to(_tiny_dir() / TINY_ZIP1)
    with pytest.raises(DataError) as e:
        load_dataset("tiny-imagenet", tmp_path, "train", in_memory=False)
    one_line(e, str(tmp_path), "part2of4")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tiny-imagenet-200.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError) as e:
        load_dataset("tiny-imagenet", bad, "val", in_memory=False)
    one_line(e, "tiny-imagenet-200.zip", "zip")


@pytest.mark.slow
def test_tiny_imagenet_full_decode_from_zips(cache):
    train = load_dataset("tiny-imagenet", _tiny_dir(), "train", cache_dir=cache)
    assert train.images.shape == (100_000, 3, 64, 64)
    again = load_dataset("tiny-imagenet", _tiny_dir(), "train", cache_dir=cache)
    assert torch.equal(again.images[::997], train.images[::997])


# -------------------------------------------------------------------------------- image folders


def test_image_list_loads_300_with_labels(cache):
    root = shared_path("imagenet-val-300")
    s = load_dataset("image-list", root, "val", cache_dir=cache)
    lines = [line.split() for line in (root / "labels.txt").read_text().splitlines() if line.strip()]
    assert len(s) == 300 and s.labels.tolist() == [int(c) for _, c in lines]
    assert s.num_classes == 1000 and s.classes[0] == "tench"
    assert s.images.shape == (300, 3, 227, 227)  # Caffe eval policy: 227x227 images stored as they are
    pil = Image.open(root / "images" / lines[0][0]).convert("RGB")
    assert torch.equal(s.images[0], torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    assert len(load_dataset("image-list", root, "test", cache_dir=cache)) == 300


def _small_image_list(tmp_path: Path, n: int = 4) -> Path:
    src = shared_path("imagenet-val-300")
    lines = (src / "labels.txt").read_text().splitlines()[:n]
    (tmp_path / "images").mkdir(parents=True)
    for line in lines:
        shutil.copyfile(src / "images" / line.split()[0], tmp_path / "images" / line.split()[0])
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_cache_is_reused_then_invalidated_by_a_changed_file(tmp_path, cache, monkeypatch):
    root = _small_image_list(tmp_path / "list")
    first = load_dataset("image-list", root, "val", cache_dir=cache, preset="report004")
    assert first.images.shape == (4, 3, 256, 256) and first.classes == [str(i) for i in range(first.num_classes)]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite a valid cache entry")

    monkeypatch.setattr(registry, "decode_all", no_decode)
    again = load_dataset("image-list", root, "val", cache_dir=cache, preset="report004")
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    img = next((root / "images").iterdir())
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("image-list", root, "val", cache_dir=cache, preset="report004")


def test_unreadable_cache_entry_is_rebuilt(tmp_path, cache):
    root = _small_image_list(tmp_path / "list", 2)
    first = load_dataset("image-list", root, "val", cache_dir=cache)
    (entry,) = cache.glob("*.safetensors")
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_dataset("image-list", root, "val", cache_dir=cache)
    assert torch.equal(again.images, first.images)


def test_image_list_errors_name_the_file_and_line(tmp_path):
    root = _small_image_list(tmp_path / "list", 3)
    (root / "labels.txt").write_text((root / "labels.txt").read_text() + "oops\n")
    with pytest.raises(DataError) as e:
        load_dataset("image-list", root, "val", cache_dir=False)
    one_line(e, "labels.txt:4", "<file> <class index>")
    root2 = _small_image_list(tmp_path / "list2", 2)
    victim = sorted((root2 / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated JPEG
    with pytest.raises(DataError) as e:
        load_dataset("image-list", root2, "val", cache_dir=False)
    one_line(e, victim.name, "cannot decode")


def test_image_list_refuses_paths_outside_and_names_bad_labels_and_bytes(tmp_path):
    root = _small_image_list(tmp_path / "list", 2)
    (tmp_path / "secret.JPEG").write_bytes((sorted((root / "images").iterdir())[0]).read_bytes())
    good = (root / "labels.txt").read_text()
    for line, needles in ((["../../secret.JPEG 0"], ["labels.txt:3", "leaves"]),
                          ([f"{tmp_path}/secret.JPEG 0"], ["labels.txt:3", "leaves"]),
                          ([f"{sorted((root / 'images').iterdir())[0].name} -3"], ["labels.txt:3", "class index -3"])):
        (root / "labels.txt").write_text(good + "\n".join(line) + "\n")
        with pytest.raises(DataError) as e:
            load_dataset("image-list", root, "val", cache_dir=False)
        one_line(e, *needles)
    (root / "labels.txt").write_bytes(good.encode() + b"caf\xe9.JPEG 0\n")
    with pytest.raises(DataError) as e:
        load_dataset("image-list", root, "val", cache_dir=False)
    one_line(e, "labels.txt:3", "not UTF-8")


def _imagefolder(tmp_path: Path) -> Path:
    src = sorted(shared_path("imagenet-val-300", "images").glob("*.JPEG"))
    for split, classes in (("train", ("cat", "dog")), ("val", ("dog",))):
        for k, c in enumerate(classes):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(2):
                shutil.copyfile(src[4 * k + 2 * (split == "val") + j], tmp_path / split / c / f"{j}.JPEG")
    Image.new("RGB", (150, 100), (255, 0, 0)).save(tmp_path / "train" / "cat" / "red.png")  # odd size, PNG
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder_train_and_val(tmp_path, cache):
    root = _imagefolder(tmp_path / "folder")
    train = load_dataset("imagefolder", root, "train", cache_dir=cache)
    val = load_dataset("imagefolder", root, "val", cache_dir=cache, preset="caffe")
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 0, 1, 1]
    assert train.images.shape == (5, 3, 256, 256)  # report004 decode: shorter side 256, centre square
    assert train.images[2, 0].float().mean() > 250 and train.images[2, 1].float().mean() < 5  # the red PNG
    assert val.classes == ["cat", "dog"] and val.labels.tolist() == [1, 1] and val.images.shape[-1] == 227
    lazy = load_dataset("imagefolder", root, "train", in_memory=False)
    assert torch.equal(lazy[2][0], train.images[2]) and lazy.num_classes == 2


def test_imagefolder_bad_layouts(tmp_path):
    root = _imagefolder(tmp_path / "folder")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root, "train", cache_dir=False)
    one_line(e, str(root / "train" / "empty"), "no images")
    (root / "train" / "empty").rmdir()
    (root / "val" / "bird").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root, "val", cache_dir=False)
    one_line(e, "bird", "not a folder under")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root / "train", "train", cache_dir=False)
    one_line(e, "train/<class>")


# ----------------------------------------------------------------------------------------- digits


def test_digits_are_sklearns_1797_real_images():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360) and train.num_classes == 10
    assert train.images.shape[1:] == (3, 8, 8) and int(train.images.max()) == 255
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    ref = load_digits()
    all_imgs = torch.cat([train.images, test.images])[:, 0].float()
    ref_imgs = torch.from_numpy(np.rint(ref.images * 255 / 16)).float()
    assert sorted(map(bytes, all_imgs.to(torch.uint8).numpy())) == sorted(map(bytes, ref_imgs.to(torch.uint8).numpy()))
    assert torch.bincount(test.labels).min() >= 35  # stratified: every digit in the test split
    assert torch.equal(load_dataset("digits").images, train.images)  # fixed split


# ------------------------------------------------------------------------------- registry errors


def test_unknown_dataset_and_split_are_config_errors():
    with pytest.raises(ConfigError, match="cifar10.*digits"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="train, test"):
        load_dataset("digits", split="val")
    with pytest.raises(ConfigError):
        load_dataset("digits", val_fraction=1.5)
    assert set(list_datasets()) >= {"cifar10", "cifar100", "tiny-imagenet", "imagefolder", "image-list", "digits"}


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tiny-imagenet", "imagefolder", "image-list"])
def test_missing_or_wrong_folders_are_one_line_data_errors(name, tmp_path, monkeypatch):
    monkeypatch.delenv("SQUEEZELAB_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path / "nope", "val" if name == "image-list" else "train")
    one_line(e, str(tmp_path / "nope"), "not found")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path / "junk", "val" if name == "image-list" else "train")
    one_line(e, str(tmp_path / "junk"), "expected")
    with pytest.raises(DataError, match="needs a data directory"):
        load_dataset(name, None, "val" if name == "image-list" else "train")


# --------------------------------------------------------------------------------- TensorLoader


def _indexed(n: int):
    """Images whose first pixel encodes their index (n <= 256), labels = index."""
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return images, torch.arange(n)


def test_tensor_loader_epochs_cover_everything_and_reshuffle():
    images, labels = _indexed(103)
    loader = TensorLoader(images, labels, 10, shuffle=True, drop_last=False, device="cpu", seed=5)
    assert len(loader) == 11
    epoch0 = [(x, y) for x, y in loader]
    seen = torch.cat([y for _, y in epoch0])
    assert sorted(seen.tolist()) == list(range(103))
    assert all(torch.equal(x[:, 0, 0, 0].long(), y) for x, y in epoch0)  # images stay with labels
    epoch1 = torch.cat([y for _, y in loader])
    assert not torch.equal(seen, epoch1)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in loader]), seen)
    other = TensorLoader(images, labels, 10, shuffle=True, drop_last=False, device="cpu", seed=6)
    assert not torch.equal(torch.cat([y for _, y in other]), seen)


def test_tensor_loader_drop_last_and_ddp_shards():
    images, labels = _indexed(103)
    dl = TensorLoader(images, labels, 10, shuffle=False, drop_last=True, device="cpu", seed=0)
    assert len(dl) == 10 and sum(len(y) for _, y in dl) == 100
    shards = [TensorLoader(images, labels, 8, shuffle=True, drop_last=False, device="cpu", seed=1, rank=r,
                           world_size=4) for r in range(4)]
    got = [torch.cat([y for _, y in s]) for s in shards]
    assert len({len(s) for s in shards}) == 1 and all(len(g) == 26 for g in got)  # 104 = 103 + 1 wrapped
    assert set(torch.cat(got).tolist()) == set(range(103))
    assert len(set(got[0].tolist()) & set(got[1].tolist())) <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensor_loader_moves_data_to_the_gpu_once():
    images, labels = _indexed(50)
    loader = TensorLoader(images, labels, 16, shuffle=True, drop_last=False, device="cuda", seed=0)
    assert loader.images.is_cuda and all(x.is_cuda and y.is_cuda for x, y in loader)


# -------------------------------------------------------------------- split_scheme "pooled" (report 003)


def _pooled(root, split, **kw):
    return load_dataset("cifar10", root, split, **{"val_fraction": 0.1, "split_scheme": "pooled", **kw})


def _image_keys(s) -> list[bytes]:
    return sorted(bytes(im.numpy()) + bytes([int(y)]) for im, y in zip(s.images, s.labels))


def test_cifar_pooled_split_is_80_10_10_stratified_disjoint_and_complete(shared_data):
    _cifar_dir()
    tr, va, te = (_pooled(shared_data, s) for s in ("train", "val", "test"))
    full_train, full_test = load_dataset("cifar10", shared_data, "train"), load_dataset("cifar10", shared_data, "test")
    assert len(full_train) + len(full_test) == 6102
    # per class of n images: round(n * 0.1) to val, as many to test, the rest to train
    counts = torch.bincount(torch.cat([full_train.labels, full_test.labels]), minlength=10)
    per_class = torch.tensor([round(n * 0.1) for n in counts.tolist()])
    assert torch.equal(torch.bincount(va.labels, minlength=10), per_class)
    assert torch.equal(torch.bincount(te.labels, minlength=10), per_class)
    assert torch.equal(torch.bincount(tr.labels, minlength=10), counts - 2 * per_class)
    assert (len(tr), len(va), len(te)) == (4880, 611, 611)
    assert (tr.split, va.split, te.split) == ("train", "val", "test") and tr.classes == full_train.classes
    # disjoint, and together exactly the pooled official train + test images (with their labels)
    keys = [set(_image_keys(s)) for s in (tr, va, te)]
    assert sum(map(len, keys)) == 6102
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sorted(_image_keys(tr) + _image_keys(va) + _image_keys(te)) == sorted(
        _image_keys(full_train) + _image_keys(full_test))
    # both official splits contribute to every part
    official_test = set(_image_keys(full_test))
    assert all(k & official_test for k in keys) and all(k - official_test for k in keys)


def test_cifar_pooled_split_is_seeded(shared_data):
    _cifar_dir()
    va, te = _pooled(shared_data, "val", seed=0), _pooled(shared_data, "test", seed=0)
    again = _pooled(shared_data, "val", seed=0)
    other, other_te = _pooled(shared_data, "val", seed=1), _pooled(shared_data, "test", seed=1)
    assert torch.equal(again.images, va.images) and torch.equal(again.labels, va.labels)
    assert not torch.equal(other.images, va.images) and not torch.equal(other_te.images, te.images)
    assert torch.equal(torch.bincount(other.labels, minlength=10), torch.bincount(va.labels, minlength=10))


def test_digits_pooled_split_covers_all_1797():
    parts = [load_dataset("digits", None, s, val_fraction=0.2, split_scheme="pooled", seed=3)
             for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == 1797 and len(parts[1]) == len(parts[2])
    assert abs(len(parts[1]) - 0.2 * 1797) <= 10
    keys = [set(_image_keys(p)) for p in parts]
    assert len(keys[0] | keys[1] | keys[2]) == sum(map(len, keys))


def test_pooled_split_errors_are_config_errors():
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", None, "train", val_fraction=0.1, split_scheme="mixed")
    one_line(e, "mixed", "official", "pooled")
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", None, "train", split_scheme="pooled")
    one_line(e, "pooled", "val_fraction > 0")
    for bad in (0.5, 0.7, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            load_dataset("digits", None, "train", val_fraction=bad, split_scheme="pooled")
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", None, "train", val_fraction=0.1, split_scheme="pooled", in_memory=False)
    one_line(e, "pooled", "in_memory")
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", None, "holdout", val_fraction=0.1, split_scheme="pooled")
    one_line(e, "train, val, test", "holdout")
