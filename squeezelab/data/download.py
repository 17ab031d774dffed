"""``--download``: fetch a dataset's official archive into the data folder, md5-checked, atomically.

The one table of official archives is ``ARCHIVES``; a dataset supports ``download=True`` exactly when it
is listed there. ``$SQUEEZELAB_DOWNLOAD_MIRROR`` (a URL prefix) replaces the official host, for users
behind a proxy or a local mirror (and for the offline tests); the md5 is checked all the same.

Files only ever appear under their final names complete: downloads stream into a temporary file in
the same folder and are ``os.replace``-d into place after the md5 check, and archives are extracted
into a temporary folder that is renamed into place. An interrupted run leaves at worst a hidden
``.*.part`` file or ``.extract-*`` folder, never a half file that a later run would mistake for data.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from squeezelab.errors import DataError

MIRROR_ENV = "SQUEEZELAB_DOWNLOAD_MIRROR"
PROGRESS_EVERY_S = 5.0  # seconds between progress lines: enough to see it move, few enough for a log
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    extract_to: str | None  # top folder a .tar.gz holds; None: the file is used as it is (read in place)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
    # tinyimagenet.py reads the zip in place, so it is not extracted (110k small files would be slower).
    "tiny-imagenet": Archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                             "90528d7ca1a48142e341f4ef8d21d0de", None),
}


def downloadable() -> list[str]:
    """Datasets that ``load_dataset(..., download=True)`` can fetch."""
    return sorted(ARCHIVES)


def source_url(archive: Archive) -> str:
    """The official URL, or ``<mirror>/<file name>`` when $SQUEEZELAB_DOWNLOAD_MIRROR is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url


def ensure(name: str, data_dir: str | os.PathLike) -> Path:
    """Fetch (and for a .tar.gz, extract) dataset ``name``'s archive into ``data_dir``; -> the folder
    the dataset reader should look in. Files already there with the right md5 are not fetched again."""
    archive = ARCHIVES[name]
    data_dir = Path(data_dir)
    path = fetch(source_url(archive), data_dir, archive.filename, archive.md5)
    if archive.extract_to is not None:
        extract_tar(path, data_dir, archive.extract_to)
    return data_dir


# ------------------------------------------------------------------------------------------ fetch


def fetch(url: str, dest_dir: str | os.PathLike, filename: str, md5: str, *, timeout: float = 60) -> Path:
    """``dest_dir/filename`` with md5 ``md5``: the file already there, or ``url`` downloaded to it.

    Network failure or md5 mismatch -> one-line DataError; no partial file is left behind either way."""
    dest_dir = Path(dest_dir)
    final = dest_dir / filename
    if final.is_file():
        if file_md5(final) == md5:
            return final  # already downloaded: no network at all
        print(f"{final}: md5 differs from the official archive's; downloading it again", file=sys.stderr)
    # The temporary file lives in dest_dir so os.replace is a same-filesystem (atomic) rename.
    fd, tmp = _writable(dest_dir, lambda: tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part"))
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, final, timeout)
        if got != md5:
            raise DataError(f"{url}: md5 {got} does not match the expected {md5} (corrupted or changed download; "
                            "nothing was kept)")
        os.replace(tmp, final)
    except BaseException:  # includes KeyboardInterrupt: never leave the .part file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def _stream(url: str, out, final: Path, timeout: float) -> str:
    """Copy ``url`` into ``out`` -> the md5 of what was written. Network errors -> DataError."""
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security: allowed on FIPS systems too
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = _content_length(resp)
            # Printed only once connected, so a failed connection stays one line on stderr.
            print(f"downloading {url} -> {final}" + (f" ({_mb(total)})" if total else ""), file=sys.stderr)
            done, last = 0, time.monotonic()
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    print(f"  {final.name}: {_progress(done, total)}", file=sys.stderr)
    # URLError/HTTPError, timeouts and refused/reset connections are all OSError subclasses;
    # HTTPException covers a body cut short (IncompleteRead); ValueError a malformed mirror URL.
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DataError(f"could not download {url} ({_reason(e)}); download it yourself and pass --data-dir "
                        "to its folder") from None
    print(f"  {final.name}: {_progress(done, total)}, done", file=sys.stderr)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_length(resp) -> int | None:
    try:
        return int(resp.headers.get("Content-Length")) or None
    except (TypeError, ValueError):
        return None  # absent or garbled: progress shows bytes only


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _progress(done: int, total: int | None) -> str:
    return f"{_mb(done)} / {_mb(total)} ({100 * done / total:.0f}%)" if total else _mb(done)


def _reason(e: BaseException) -> str:
    """A network error as a short phrase ("HTTP 404 Not Found", "[Errno 111] Connection refused")."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):  # reason: a string, or the socket error behind it
        e = e.reason
    text = " ".join(str(e).split())  # one line whatever the error says
    return text or type(e).__name__


# ---------------------------------------------------------------------------------------- extract


def extract_tar(archive: str | os.PathLike, dest_dir: str | os.PathLike, expected_top: str) -> Path:
    """Safely extract the .tar.gz ``archive``'s ``expected_top/`` folder to ``dest_dir/expected_top``.

    Members with absolute paths or ``..`` (or links/devices) are refused before anything is written;
    extraction goes to a temporary folder in dest_dir that is renamed into place only when complete."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    target = dest_dir / expected_top
    if target.exists():
        # Never overwritten: another process (e.g. a torchrun rank) extracted it a moment ago, or it is
        # the user's; the dataset reader checks what is inside and names what is missing.
        return target
    tmp = Path(_writable(dest_dir, lambda: tempfile.mkdtemp(dir=dest_dir, prefix=".extract-")))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()  # reads the whole archive: truncation shows up here
                _check_members(archive, members)
                _extractall(tar, tmp)
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise DataError(f"{archive}: not a readable .tar.gz archive ({_reason(e)}); delete it and "
                            "download again") from None
        except OSError as e:  # disk full, permissions: the archive may be fine
            raise DataError(f"{archive}: could not extract into {dest_dir} ({_reason(e)})") from None
        if not (tmp / expected_top).is_dir():
            raise DataError(f"{archive}: no {expected_top}/ folder in the archive (not the official archive?)")
        _move_into_place(tmp / expected_top, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # whatever else the archive held, or a failed extraction
    return target


def _writable(folder: Path, make):
    """``make()`` (creating a temporary file/folder in ``folder``), a read-only folder -> DataError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return make()
    except OSError as e:
        raise DataError(f"{folder}: cannot write the download there ({_reason(e)})") from None


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or (os.sep != "/" and os.sep in m.name):
            raise DataError(f"{archive}: refusing unsafe member path {m.name!r} (absolute or with '..')")
        if not (m.isfile() or m.isdir()):  # the official archives hold only files and folders
            raise DataError(f"{archive}: refusing member {m.name!r} (links and devices are not extracted)")


def _extractall(tar: tarfile.TarFile, dest: Path) -> None:
    # The "data" filter (Python 3.12, backported to 3.11.4) re-checks paths and drops unsafe modes;
    # _check_members already refused what it would, so older Pythons are safe without it.
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:
        tar.extractall(dest)


def _move_into_place(src: Path, target: Path) -> None:
    try:
        os.rename(src, target)  # same filesystem: atomic, so target is either absent or complete
    except OSError as e:
        if not target.is_dir():
            raise DataError(f"cannot move the extracted {src.name}/ to {target} ({_reason(e)})") from None
        # Another process (e.g. another torchrun rank) renamed its copy into place first: keep that one.
