"""Runtime: seeding, device / precision choice, distributed setup, run folders, environment record.

Everything that touches the process (threads, RNGs, environment variables, the file system layout of
``runs/<id>/``) lives here so that the engine stays a set of functions of its inputs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from squeezelab.config import AMP_CHOICES, RunConfig, config_hash
from squeezelab.errors import ConfigError, DataError, WriteError

# --------------------------------------------------------------------------------------------
# Atomic files: write a temp file in the same folder, fsync, os.replace (atomic on POSIX).
# --------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(fd: int) -> None:
    """Give a temp file the mode a plain open() would (mkstemp makes it 0600: unreadable to others)."""
    os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_with(path: str | Path, write, errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
    """``write(tmp)`` fills a temp file beside ``path``; it is then given a plain file's mode, fsynced and
    renamed over ``path``: a crash leaves the old or the new file, never a mix. The one place files are
    replaced (checkpoints, ONNX, JSON, YAML all come through here). An error of ``errors`` (a refused
    write: disk full, read-only...; a writer may raise its own for that) becomes a one-line WriteError
    naming ``path``, and the temp file is removed whatever happened."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise WriteError.of(path, err) from None
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # after the writer, which may create the file anew (mode 0600)
            publish_mode(f.fileno())
            os.fsync(f.fileno())  # on disk before it replaces the old file
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, errors) and not isinstance(err, WriteError):
            raise WriteError.of(path, err) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --------------------------------------------------------------------------------------------
# Seeds and devices.
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (numpy/random are not used by the engine)."""
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A per-(epoch, rank) seed: makes every epoch's randomness a pure function of its index, so a
    resumed run draws exactly what the uninterrupted one did."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def choose_device(spec: str = "auto", local_rank: int = 0, where: str = "train.device") -> torch.device:
    """``auto`` -> the local CUDA device when present, else CPU; otherwise ``spec`` as given.
    ``where``: the setting's name in error messages."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":  # one GPU per process under torchrun
        spec = f"cuda:{local_rank}"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{where}: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}: {spec} requested but CUDA is not available here")
    return device


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container or taskset may allow fewer)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def idle_cores(sample_s: float = 0.1) -> float | None:
    """How many of this process's cores were idle over a short sample of /proc/stat (None where
    there is no /proc/stat)."""
    import time

    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))

    def read() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    ticks = [int(v) for v in fields[:8]]
                    out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait, total
        return out

    try:
        a = read()
        time.sleep(sample_s)
        b = read()
    except (OSError, ValueError, IndexError):
        return None
    idle = total = 0
    for cpu, (i1, t1) in b.items():
        i0, t0 = a.get(cpu, (i1, t1))
        idle, total = idle + i1 - i0, total + t1 - t0
    return len(b) * idle / total if total else None


def choose_threads(requested: int | None) -> int:
    """torch's intra-op threads for a run: ``requested`` when given, else the cores that are idle now.

    torch's default takes every core; when other processes keep some busy, its threads wait on each
    other's time slices and a step can take 10-50x longer (measured: digits epochs 3.4 s -> 39-187 s
    with two busy loops on 2 cores, 7.8 s with 1 thread). So ``auto`` leaves busy cores alone:
    round(idle cores), at least 1, at most the cores this process may use."""
    if requested:
        return requested
    idle = idle_cores()
    cores = available_cores()
    return cores if idle is None else max(1, min(cores, int(idle + 0.5)))


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    ``auto`` picks bf16 where the hardware has it natively: CUDA compute capability >= 8.0 (A100,
    H100, RTX 30xx+) and CPUs with AVX512-BF16 / AMX (as oneDNN reports it). Older CUDA GPUs (V100,
    T4, RTX 20xx) only emulate bf16, so ``auto`` gives them fp16, which their tensor cores run, with a
    GradScaler (see ``needs_grad_scaler``). On CPUs without native bf16 it is emulated and slow: on
    our 2-core AVX2 EPYC dev box (torch 2.14) bf16 autocast trained a SqueezeNet 1.1 at 32 px at
    50-400 img/s against 1800-2200 img/s in fp32, and `squeezelab bench train` on the CIFAR subset
    gave 0.29x of the naive fp32 pipeline, so ``auto`` is fp32 there (fp16 on such CPUs is slower
    still). Where it is native it pays: on a 2-core AMX Xeon bf16 ran the SqueezeNet 1.1 training
    step at 1,422 vs 686 img/s (64 px) and 70 vs 32 img/s (227 px); at 32 px the two were even
    (results/bench_cpu.md). ``bf16`` / ``fp16`` force that dtype, ``off`` is always fp32.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "off":
        return None
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cuda":
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if native_bf16 else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16's 5-bit exponent underflows small gradients, so its losses are scaled (bf16's is fp32's)."""
    return dtype == torch.float16


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_channels_last(channels_last: str, device: torch.device) -> bool:
    """``auto``: on. CUDA tensor cores want NHWC; on CPU oneDNN's NHWC kernels helped in fp32 too:
    `squeezelab bench train` (CIFAR subset, batch 128, 1 thread, 2-core AVX2 EPYC, torch 2.14) gave
    SqueezeNet 1.1 at 32 px 919 -> 1267 img/s (imagenet stem) and 26 -> 41 img/s vs the naive
    pipeline (small stem)."""
    if channels_last != "auto":
        return channels_last == "on"
    return True


def resolve_compile(compile: str, device: torch.device) -> bool:
    """``auto``: torch.compile on CUDA, eager on CPU. Measured: on one H100 the Tiny ImageNet 64 px recipe
    trained 1.4x faster compiled (13.4k -> 18.9k img/s, 40 epochs 316 -> 250 s, issue 13); on both our
    2-core CPUs compiling made SqueezeNet 1.1 training slower (575 vs 1,365 img/s at 64 px in bf16)."""
    if compile != "auto":
        return compile == "on"
    return device.type == "cuda"


# --------------------------------------------------------------------------------------------
# Distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group torchrun described: NCCL on CUDA, gloo on CPU."""
    import torch.distributed as dist

    if not info.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown_distributed(*, barrier: bool = False) -> None:
    """Leave the process group. ``barrier``: wait for every rank first (only after a run that ended
    normally everywhere; a rank that failed would leave the others waiting). Without it a rank could
    tear gloo down while its peer is still in a collective, which aborted a process at exit."""
    import torch.distributed as dist

    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first(info: DistInfo):
    """Rank 0 runs the block first (a --download, decoding into the shared cache) while the other
    ranks wait at a barrier; they then run it and find the files ready instead of all fetching and
    decoding at once. If rank 0 fails, the others still pass the barrier and fail the same way."""
    import torch.distributed as dist

    if info.enabled and not info.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if info.enabled and info.is_main:
            dist.barrier()


def broadcast_str(value: str | None, info: DistInfo) -> str | None:
    """Rank 0's string on every rank (e.g. the run folder name, which contains the time)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------------------------
# Run folders.
# --------------------------------------------------------------------------------------------

SUMMARY = "summary.json"  # written when a run ends; status "finished" runs are never overwritten


def run_id(cfg: RunConfig, now: _dt.datetime | None = None) -> str:
    """``20260122-153012-squeezenet1_1-cifar10-a1b2c3``: readable, sortable, and tied to the config."""
    now = now or _dt.datetime.now()
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.]+", "-", s).strip("-")
    return f"{now:%Y%m%d-%H%M%S}-{slug(cfg.model.name)}-{slug(cfg.data.dataset)}-{config_hash(cfg)}"


def remove_stale_temps(folder: Path) -> None:
    """Delete the temp files of atomic writes that a kill interrupted (``.<name>.<random>.tmp``)."""
    for tmp in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        tmp.unlink(missing_ok=True)


def new_run_dir(cfg: RunConfig) -> Path:
    """Create the run folder: output.run_dir if given (refusing one that holds files), else a fresh
    ``runs_dir/<run_id>`` (a numeric suffix is added if two runs start in the same second)."""
    if cfg.output.run_dir:
        path = Path(cfg.output.run_dir)
        remove_stale_temps(path)  # a kill before config.yaml was in place leaves only those
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"run folder {path} already holds files; use --resume {path} or a new --run-dir")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(cfg.output.runs_dir) / run_id(cfg)
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def run_status(run_dir: Path) -> str | None:
    """"finished" / "failed" from the run's summary.json; None while running or interrupted."""
    try:
        return json.loads((Path(run_dir) / SUMMARY).read_text()).get("status")
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Environment record.
# --------------------------------------------------------------------------------------------


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the source tree squeezelab runs from (None outside a git checkout)."""
    start = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("squeezelab", "torch", "torchvision", "numpy", "safetensors", "pyyaml"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; platform.processor() is empty there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3`` / the CPU's model name: what a timing was measured on."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def environment_record(device: torch.device, info: DistInfo, resolved: dict | None = None) -> dict:
    """What produced a run: code version, libraries, hardware, threads and the resolved choices."""
    dev = {"type": device.type, "name": device_name(device)}
    if device.type == "cuda":
        dev["capability"] = list(torch.cuda.get_device_capability(device))
    elif device.type == "cpu":  # what amp "auto" decided from; CPU timings with and without it differ 2x
        dev["native_bf16"] = _cpu_has_native_bf16()
    return {
        "git_commit": git_commit(),
        "versions": _versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": dev,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "world_size": info.world_size,
        "resolved": resolved or {},
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }


MAX_READ = 1 << 30  # no input squeezelab reads whole (an image, a class list, a recipe) is near a GiB


def check_regular(path: str | Path, what: str = "file"):
    """``os.stat`` of a regular file; absent, unreadable, a pipe, device or folder: a one-line DataError."""
    import stat as _stat

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if not _stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a pipe, device or folder cannot be read as the {what})")
    return st


def read_regular(path: str | Path, what: str = "file", max_bytes: int = MAX_READ) -> bytes:
    """The bytes of a regular file. A FIFO or device (/dev/zero, a named pipe) would block or never end,
    and a file past ``max_bytes`` is not one squeezelab reads whole: each is a one-line DataError naming
    the path, as an absent or unreadable file is."""
    path = Path(path)
    st = check_regular(path, what)
    if st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size:,} bytes is larger than any {what} squeezelab reads "
                        f"({max_bytes:,} at most)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise DataError(f"{path}: larger than any {what} squeezelab reads ({max_bytes:,} bytes at most)")
    return data


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ESC sequences that move the cursor, erase or
    forge lines, carriage returns, NULs) shown escaped, as Python writes them (\\x1b), never sent raw."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
