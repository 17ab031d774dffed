"""Experiment checks with real processes: two sweep workers sharing SQLite or a throwaway PostgreSQL
server, one killed with SIGKILL mid-trial and its point re-run by the other (heartbeat), then the same
command again; and a report opened in headless Chromium. The PostgreSQL one (~50 s) runs in the
default suite, as CI installs the server for it; the others are slow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT


SMOKE = REPO_ROOT / "configs" / "digits_smoke.yaml"
# Debian's server binaries (initdb, pg_ctl), newest version first; .ci/run installs them when missing
PG_BIN = next((p.parent for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
                                        reverse=True)), Path("/usr/lib/postgresql/15/bin"))


def _study(tmp_path: Path) -> Path:
    # 3 SR x 2 seeds; 3 epochs of 512 digits, so that a trial lasts long enough to be killed in it
    study = {"name": "killtest", "base": str(SMOKE), "sampler": "grid", "seeds": {"values": [0, 1]},
             "space": {"model.options.sr": [0.25, 0.5, 1.0]},
             "scales": {"smoke": {"set": {"train.epochs": 3, "data.limit": 512, "model.options.num_fire": 4}}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _sweep(path: Path, out: Path, storage: str | None) -> list[str]:
    return [sys.executable, "-m", "squeezelab", "sweep", str(path), "-o", str(out), "--heartbeat", "1",
            "--set", "train.threads=1", *(["--storage", storage] if storage else [])]


def _child_run_dir(pid: int) -> Path | None:
    """The run folder the worker's `squeezelab train` child is writing (from its command line)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        args = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        for flag in ("--run-dir", "--resume"):
            if flag in args:
                return Path(args[args.index(flag) + 1])
    return None


def _kill_mid_trial(worker: subprocess.Popen, timeout: float = 240) -> Path:
    """SIGKILL the worker once its trial has written its first epoch (a checkpoint exists)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        run = _child_run_dir(worker.pid)
        if run is not None and (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip():
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            return run
        assert worker.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
    raise AssertionError("no trial reached its first epoch in time")


def _check_exactly_once(out: Path, storage: str | None, killed_run: Path) -> None:
    import optuna

    url = storage or f"sqlite:///{out / 'optuna.db'}"
    from squeezelab.experiments.sweep import storage_url

    name = optuna.study.get_all_study_names(storage_url(url, out))
    assert len(name) == 1
    trials = optuna.load_study(study_name=name[0], storage=storage_url(url, out)).get_trials()
    done = {}
    for t in trials:
        if t.state.name == "COMPLETE":
            done.setdefault(t.user_attrs["key"], []).append(t.number)
    assert len(done) == 6 and all(len(v) == 1 for v in done.values()), done  # each grid point once
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and "run_failed" not in killed[0].user_attrs  # failed by its stale heartbeat
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 6
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
        epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], (run, epochs)  # the resumed run has every epoch once
    log = (out / "logs" / f"{killed_run.name}.log").read_text()
    assert "resuming" in log  # the killed trial's folder was continued from its checkpoint


def _two_workers_one_killed(tmp_path: Path, storage: str | None) -> None:
    path, out = _study(tmp_path), tmp_path / "st"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(_sweep(path, out, storage), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the first creates the study; the second joins it
    second = subprocess.Popen(_sweep(path, out, storage), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    killed_run = _kill_mid_trial(first)
    out2, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out2
    assert "1 killed and re-run" in out2 and "6 complete" in out2, out2
    # the same command again: nothing left to run
    again = subprocess.run(_sweep(path, out, storage), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "this worker: ran 0" in again.stdout, again.stdout + again.stderr
    _check_exactly_once(out, storage, killed_run)


@pytest.mark.slow
def test_sqlite_two_workers_one_killed_every_point_once(tmp_path):
    _two_workers_one_killed(tmp_path, None)


@pytest.fixture
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server on a unix socket, run as `nobody` (initdb refuses root)."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql)")
    user = [] if os.geteuid() != 0 else ["runuser", "-u", "nobody", "--"]
    if user and shutil.which("runuser") is None:
        pytest.skip("running as root and no runuser to start PostgreSQL as another user")
    d = Path(subprocess.check_output(["mktemp", "-d", "/tmp/squeezelab-pg-XXXXXX"], text=True).strip())
    if user:
        shutil.chown(d, "nobody")
    data = d / "data"
    subprocess.run([*user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", f"-k {d} -c listen_addresses=''",
                    "-l", str(d / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={d}"
    finally:
        subprocess.run([*user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_postgresql_two_workers_one_killed_every_point_once(tmp_path, postgres):
    _two_workers_one_killed(tmp_path, postgres)


# ------------------------------------------------------------------------------------ browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(page: Path, png: Path, tmp: Path, size: str = "1200,1400") -> None:
    browser = _chromium()
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}",
                    f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    if _chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    from PIL import Image

    from squeezelab.cli import main
    from tests.test_experiments import FAST, fake_run, write_study
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    path = write_study(tmp_path, seeds={"values": [0, 1]})
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed in (0, 1):
        fake_run(out, 0.25, seed, [0.3, 0.5 + 0.02 * seed])
        fake_run(out, 1.0, seed, [0.4, 0.6 + 0.01 * seed])
    assert main(["report", str(out)]) == 0 and FAST
    png = tmp_path / "shot.png"
    screenshot(out / "index.html", png, tmp_path / "profile")
    img = Image.open(png).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert img.size == (1200, 1400)
    assert len(colours) > 50, "the page rendered blank"  # text, tables and two plots: many colours
    # the plots are drawn: some strongly coloured (matplotlib's blue / orange) pixels exist
    assert any(abs(r - b) > 100 for _, (r, g, b) in colours)
