"""``--download`` offline: a localhost HTTP server stands in for the official hosts
($SQUEEZELAB_DOWNLOAD_MIRROR), serving small archives in the official formats built here, with the md5
in ``ARCHIVES`` patched to theirs. Covers fetch + extract + no second fetch, md5 mismatch, unreachable
and missing files, unsafe or corrupt archives, Tiny ImageNet's zip read in place, and the CLI flags."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import pickle
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from squeezelab.cli import main
from squeezelab.data import download, load_dataset
from squeezelab.data.download import ARCHIVES, MIRROR_ENV, extract_tar, fetch, file_md5
from squeezelab.errors import ConfigError, DataError
from tests.helpers import cli_one_line_error, one_line

PER_BATCH, N_TEST = 8, 10  # fake CIFAR-10: 5 x 8 training images, 10 test images
CIFAR10_TAR = "cifar-10-python.tar.gz"
TINY_ZIP = "tiny-imagenet-200.zip"


def _leftovers(folder: Path) -> list[str]:
    """Temporary download/extraction entries (hidden .part files and .extract-* folders)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


# ------------------------------------------------------------------------------- server and archives


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A localhost HTTP server over tmp_path/served; ``hits`` lists the paths requested."""
    served = tmp_path / "served"
    served.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's hook name
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.delenv("SQUEEZELAB_DATA", raising=False)
    for var in ("no_proxy", "NO_PROXY"):  # a user's http_proxy must not catch requests to localhost
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield SimpleNamespace(dir=served, hits=hits, url=f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    server.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connecting is refused


def _publish(mirror, monkeypatch, name: str, data: bytes, md5: str | None = None) -> None:
    """Serve ``data`` as dataset ``name``'s official file name, and make the table expect its md5."""
    archive = ARCHIVES[name]
    (mirror.dir / archive.filename).write_bytes(data)
    monkeypatch.setitem(ARCHIVES, name, dataclasses.replace(archive, md5=md5 or file_md5(mirror.dir / archive.filename)))


def _fake_cifar10(folder: Path) -> np.ndarray:
    """An official-format cifar-10-batches-py/ (protocol-2 pickles, bytes keys) -> all its pixels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5 * PER_BATCH + N_TEST, 3072), dtype=np.uint8)
    labels = (np.arange(len(data)) % 10).tolist()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        sl = slice(i * PER_BATCH, (i + 1) * PER_BATCH if i < 5 else None)
        batch = {b"batch_label": name.encode(), b"data": data[sl], b"labels": labels[sl]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return data


def _targz(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


@pytest.fixture
def cifar_tar(tmp_path) -> SimpleNamespace:
    pixels = _fake_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    return SimpleNamespace(data=_targz(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py"),
                           pixels=pixels)


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_tiny_zip(per_class: dict[str, int]) -> bytes:
    """tiny-imagenet-200.zip in the official layout: wnids.txt, train/<wnid>/images, val/ + annotations."""
    buf, ann, k = io.BytesIO(), [], 0
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "".join(f"{w}\n" for w in per_class))
        for w, n in per_class.items():
            for j in range(n):
                zf.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{j}.JPEG", _jpeg(k))
                zf.writestr(f"tiny-imagenet-200/val/images/val_{k}.JPEG", _jpeg(k))
                ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63\n")
                k += 1
        zf.writestr("tiny-imagenet-200/val/val_annotations.txt", "".join(ann))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- library


def test_cifar10_download_extracts_once_and_then_reads_offline(tmp_path, mirror, monkeypatch, cifar_tar, capsys):
    _publish(mirror, monkeypatch, "cifar10", cifar_tar.data)
    data_dir = tmp_path / "data"  # does not exist yet: download creates it
    train = load_dataset("cifar10", data_dir, "train", download=True)
    assert mirror.hits == [f"/{CIFAR10_TAR}"]
    assert "downloading" in capsys.readouterr().err
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and train.classes[1] == "class1"
    assert torch.equal(train.images, torch.from_numpy(cifar_tar.pixels[: 5 * PER_BATCH].reshape(-1, 3, 32, 32)))
    assert (data_dir / CIFAR10_TAR).read_bytes() == cifar_tar.data
    assert (data_dir / "cifar-10-batches-py" / "data_batch_5").is_file() and _leftovers(data_dir) == []
    assert len(load_dataset("cifar10", data_dir, "test", download=True)) == N_TEST
    assert len(mirror.hits) == 1  # found on disk: no second request
    # The extracted folder lost, the archive kept: extracted again from the archive, still offline.
    shutil.rmtree(data_dir / "cifar-10-batches-py")
    assert len(load_dataset("cifar10", data_dir, "test", download=True)) == N_TEST
    assert len(mirror.hits) == 1


def test_an_incomplete_folder_is_never_overwritten(tmp_path, mirror, monkeypatch, cifar_tar):
    _publish(mirror, monkeypatch, "cifar10", cifar_tar.data)
    data_dir = tmp_path / "data"
    (data_dir / "cifar-10-batches-py").mkdir(parents=True)
    (data_dir / "cifar-10-batches-py" / "mine.txt").write_text("the user's")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir, "train", download=True)
    one_line(e, "cifar-10-batches-py", "incomplete")
    assert [p.name for p in (data_dir / "cifar-10-batches-py").iterdir()] == ["mine.txt"]
    assert _leftovers(data_dir) == [] and (data_dir / CIFAR10_TAR).is_file()


def test_md5_mismatch_keeps_nothing(tmp_path, mirror, monkeypatch, cifar_tar):
    _publish(mirror, monkeypatch, "cifar10", cifar_tar.data, md5="0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir, "train", download=True)
    one_line(e, f"{mirror.url}/{CIFAR10_TAR}", "0" * 32, file_md5(mirror.dir / CIFAR10_TAR))
    assert list(data_dir.iterdir()) == []  # neither the archive nor a .part file


def test_a_stale_file_under_the_final_name_is_replaced(tmp_path, mirror):
    (mirror.dir / "f.bin").write_bytes(b"the real thing")
    (tmp_path / "f.bin").write_bytes(b"half a fi")
    md5 = file_md5(mirror.dir / "f.bin")
    assert fetch(f"{mirror.url}/f.bin", tmp_path, "f.bin", md5).read_bytes() == b"the real thing"
    assert fetch(f"{mirror.url}/f.bin", tmp_path, "f.bin", md5) == tmp_path / "f.bin"
    assert len(mirror.hits) == 1 and _leftovers(tmp_path) == []


def test_unreachable_server_and_missing_file_areone_line(tmp_path, mirror, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", tmp_path / "data", "train", download=True)
    one_line(e, f"could not download http://127.0.0.1:{port}/cifar-100-python.tar.gz (", "--data-dir")
    assert list((tmp_path / "data").iterdir()) == []
    with pytest.raises(DataError) as e:  # nothing served: HTTP 404
        fetch(f"{mirror.url}/nothing.tar.gz", tmp_path, "nothing.tar.gz", "0" * 32)
    one_line(e, "HTTP 404")
    assert _leftovers(tmp_path) == []


def test_download_needs_a_supported_dataset_and_a_folder(tmp_path, mirror):
    with pytest.raises(ConfigError) as e:
        load_dataset("imagefolder", tmp_path, "train", download=True)
    one_line(e, "cifar10, cifar100, tiny-imagenet", "imagefolder")
    with pytest.raises(ConfigError) as e:
        load_dataset("cifar10", None, "train", download=True)
    one_line(e, "--data-dir", "SQUEEZELAB_DATA")
    assert len(load_dataset("digits", None, "train", download=True)) > 0  # built in: nothing to fetch
    assert mirror.hits == []


def test_tiny_imagenet_zip_is_downloaded_and_read_in_place(tmp_path, mirror, monkeypatch):
    _publish(mirror, monkeypatch, "tiny-imagenet", _fake_tiny_zip({"n02": 2, "n01": 1}))
    data_dir = tmp_path / "data"
    train = load_dataset("tiny-imagenet", data_dir, "train", download=True, cache_dir=False)
    assert train.images.shape == (3, 3, 64, 64) and train.classes == ["n02", "n01"]
    assert train.labels.tolist() == [0, 0, 1]
    assert sorted(p.name for p in data_dir.iterdir()) == [TINY_ZIP]  # not extracted
    val = load_dataset("tiny-imagenet", data_dir, "val", download=True, cache_dir=False)
    assert len(val) == 3 and mirror.hits == [f"/{TINY_ZIP}"]


# ---------------------------------------------------------------------------------------- extract


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("top/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("member", [tarfile.TarInfo("top/../../evil.txt"), tarfile.TarInfo("/tmp/evil.txt"),
                                    _symlink("top/link", "../../evil.txt")], ids=["dotdot", "absolute", "symlink"])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    (tmp_path / "bad.tar.gz").write_bytes(_tar_with(member))
    with pytest.raises(DataError) as e:
        extract_tar(tmp_path / "bad.tar.gz", dest, "top")
    one_line(e, "bad.tar.gz", "refusing")
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_corrupt_or_foreign_archives_areone_line(tmp_path, cifar_tar):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "cut.tar.gz").write_bytes(cifar_tar.data[: len(cifar_tar.data) // 2])
    for name in ("junk.tar.gz", "cut.tar.gz"):
        with pytest.raises(DataError) as e:
            extract_tar(tmp_path / name, tmp_path, "cifar-10-batches-py")
        one_line(e, name, "not a readable")
    (tmp_path / "other.tar.gz").write_bytes(_tar_with(tarfile.TarInfo("top/more.txt")))  # not CIFAR's layout
    with pytest.raises(DataError) as e:
        extract_tar(tmp_path / "other.tar.gz", tmp_path, "cifar-10-batches-py")
    one_line(e, "no cifar-10-batches-py/")
    assert not (tmp_path / "cifar-10-batches-py").exists() and _leftovers(tmp_path) == []


# -------------------------------------------------------------------------------------------- CLI


def _recipe(tmp_path: Path, data_dir: Path) -> Path:
    """One tiny epoch on the fake CIFAR-10 (one torch thread: the test machines have 2 shared cores)."""
    cfg = {"model": {"name": "squeezenet1_1", "options": {"base_e": 16, "incr_e": 16, "num_fire": 2}},
           "data": {"dataset": "cifar10", "data_dir": str(data_dir), "batch_size": 16,
                    "cache_dir": str(tmp_path / "cache")},
           "train": {"epochs": 1, "amp": "off", "threads": 1, "device": "cpu"},
           "output": {"runs_dir": str(tmp_path / "runs")}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_download_for_train_and_eval_and_one_line_when_offline(tmp_path, mirror, monkeypatch, cifar_tar,
                                                                   capsys):
    _publish(mirror, monkeypatch, "cifar10", cifar_tar.data)
    assert main(["train", str(_recipe(tmp_path, tmp_path / "d1")), "--download", "--no-progress"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["download"] is True
    assert (tmp_path / "d1" / "cifar-10-batches-py" / "test_batch").is_file() and len(mirror.hits) == 1
    argv = ["eval", "--weights", str(run), "--dataset", "cifar10", "--data-dir", str(tmp_path / "d2"), "--json"]
    assert main(argv + ["--download"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == N_TEST and len(mirror.hits) == 2

    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    empty = str(tmp_path / "d3")
    cli_one_line_error(capsys, ["train", str(_recipe(tmp_path, tmp_path / "d3")), "--download", "--no-progress"],
                     "could not download", "--data-dir")
    cli_one_line_error(capsys, ["eval", "--weights", str(run), "--dataset", "cifar10", "--data-dir", empty,
                              "--download"], "could not download")
    cli_one_line_error(capsys, ["bench", "train", "--dataset", "cifar10", "--data-dir", empty, "--download"],
                     "could not download")
    cli_one_line_error(capsys, ["transfer", "--weights", str(run / "last.safetensors"), "--dataset", "cifar10",
                              "--data-dir", empty, "--download"], "could not download")
    cli_one_line_error(capsys, ["eval", "--weights", str(run), "--dataset", "imagefolder", "--data-dir", empty,
                              "--download"], "available for cifar10, cifar100, tiny-imagenet")
    assert not any((tmp_path / "d3").iterdir()) and len(mirror.hits) == 2


def test_mirror_url_is_the_file_name_under_the_prefix(monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "https://mirror.example/datasets/")
    assert download.source_url(ARCHIVES["cifar100"]) == "https://mirror.example/datasets/cifar-100-python.tar.gz"
    monkeypatch.delenv(MIRROR_ENV)
    assert download.source_url(ARCHIVES["tiny-imagenet"]) == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
