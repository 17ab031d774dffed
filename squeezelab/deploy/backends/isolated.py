"""A runtime in a process of its own.

ExecuTorch's XNNPACK backend binds ~58 ``pthreadpool_*`` symbols that both its own
``libexecutorch_threadpool.so`` and torch's ``libtorch_cpu.so`` define; in some load orders (several
runtimes in one process: a full ``bench infer``, the test suite) it segfaulted, taking the whole
process and every finished measurement with it (results/edge/README.md). Such a backend's ``load`` is
``isolated.load``: the file is loaded by the backend's ``load_here`` in a worker (``python -m
squeezelab.deploy.backends.isolated``), and the parent only exchanges arrays with it over a socket, so a
crash there is one line here and the caller's process, its other runtimes and its results survive.

The worker also times its own calls (``Loaded.timer``): a bench then measures the runtime, not the
socket.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from squeezelab.deploy import backends
from squeezelab.deploy.backends import Loaded
from squeezelab.errors import SqueezelabError, WeightsError

START_TIMEOUT_S = 600  # importing torch + the runtime and loading the file; a hung start is not waited on forever


class Worker:
    """One runtime process serving one loaded file."""

    def __init__(self, backend: str, path: Path, threads: int, precision: str | None):
        self.path = path
        ours, theirs = socket.socketpair()
        # stdout: runtimes log there (CPU probing, thread-pool resets); the answers travel on the socket.
        # stderr: kept in a file, so that a worker that dies says its last words. sys.path: the caller's,
        # so the worker imports the same squeezelab (a source checkout, a test run).
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        theirs.close()
        self.conn = Connection(ours.detach())
        weakref.finalize(self, _stop, self.proc, self.conn, self.stderr)
        self.meta = self.call(("load", backend, str(path), threads, precision), timeout=START_TIMEOUT_S)

    def call(self, request: tuple, timeout: float | None = None):
        try:
            self.conn.send(request)
            if timeout is not None and not self.conn.poll(timeout):
                raise WeightsError(f"{self.path}: the runtime did not answer in {timeout:.0f} s")
            kind, value = self.conn.recv()
        except (EOFError, OSError):  # the worker died: a crash in the runtime, or it was killed
            raise WeightsError(f"{self.path}: the runtime's process died ({_death(self.proc)}{self._last_words()}); "
                               f"this process and its other results are unaffected") from None
        if kind == "error":
            raise WeightsError(value)
        return value

    def _last_words(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [ln.strip() for ln in self.stderr.read()[-4096:].decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return f": {lines[-1][:200]}" if lines else ""

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.call(("run", np.ascontiguousarray(x, np.float32)))

    def timer(self, x: np.ndarray, n: int) -> list[float]:
        return self.call(("time", np.ascontiguousarray(x, np.float32), n))


def load(backend: str, path: Path, *, threads: int, precision: str | None):
    """``backends.get(backend).load_here(path)`` in a worker process -> a ``Loaded`` that calls it."""
    worker = Worker(backend, Path(path), threads, precision)
    info = worker.meta
    loaded = Loaded(info["backend"], info["precision"], threads, worker.run, info["meta"], timer=worker.timer)
    loaded.worker = worker  # keeps the process alive as long as the Loaded is
    return loaded


def _death(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "connection lost"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _stop(proc: subprocess.Popen, conn: Connection, stderr) -> None:
    try:
        conn.send(("stop",))
        conn.close()
        proc.wait(timeout=5)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    stderr.close()


# ------------------------------------------------------------------ the worker's side


def _serve(conn: Connection) -> None:
    loaded = None
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent went away
            return
        op = request[0]
        try:
            if op == "stop":
                return
            if op == "load":
                _, name, path, threads, precision = request
                loaded = backends.get(name).load_here(Path(path), threads=threads, precision=precision)
                conn.send(("ok", {"backend": loaded.backend, "precision": loaded.precision, "meta": loaded.meta}))
            elif op == "run":
                conn.send(("ok", loaded.run(request[1])))
            elif op == "time":
                conn.send(("ok", backends.time_calls(loaded.run, request[1], request[2])))
            else:
                conn.send(("error", f"unknown request {op!r}"))
        except SqueezelabError as err:
            conn.send(("error", str(err)))
        except Exception as err:  # noqa: BLE001 - the parent turns it into one line; the worker keeps serving
            conn.send(("error", f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"))


if __name__ == "__main__":
    conn = Connection(int(sys.argv[1]))
    try:
        _serve(conn)
    except (BrokenPipeError, ConnectionResetError, pickle.PicklingError):
        pass
    finally:
        conn.close()
        os._exit(0)  # skip interpreter teardown: some runtimes' static destructors are slow or crash
