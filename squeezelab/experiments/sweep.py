"""``squeezelab sweep``: run a study's trials on Optuna, each as an ordinary run folder.

Study folder (``-o DIR``):
    study.json         the resolved study (a folder holds one study: resuming checks its digest)
    optuna.db          the default storage (SQLite); ``--storage postgresql://...`` for many machines
    runs/<trial>/      one ordinary run folder per (variant, seed): config.yaml, metrics.jsonl, summary.json
    logs/<trial>.yaml  the trial's training config; logs/<trial>.log its output
    pruned/<trial>.json  a point a constraint pruned before training, with the reason

Each trial trains in a subprocess of ``squeezelab train`` rather than in this process: a crash, a CUDA
error or a memory blow-up kills one trial and not the worker, torch's thread and device settings
start clean for every trial, and a killed worker takes its trial with it (PR_SET_PDEATHSIG), so
nothing trains on unowned. The worker keeps the trial's Optuna heartbeat while the child runs; a
trial whose worker died goes stale, is failed by ``optuna.storages.fail_stale_trials`` and its point is
taken over (``claims``) by the next worker, which resumes the run folder from its last checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from squeezelab import runtime
from squeezelab.config import dump_config
from squeezelab.errors import ConfigError
from squeezelab.experiments.measure import measure, violations
from squeezelab.experiments.study import VARIANT, Study, Trial

DONE = ("COMPLETE", "PRUNED")  # Optuna states of a point that is finished for good


@dataclass
class SweepOptions:
    out: Path
    storage: str | None = None  # None: sqlite:///<out>/optuna.db
    extra: dict | None = None  # --set overrides applied to every trial (e.g. train.threads=1)
    heartbeat: int = 10  # seconds between heartbeats; a trial is stale after 3 of them
    poll: float = 2.0  # seconds between looks at the study while other workers hold the last points
    worker: int = 0
    # one `squeezelab sweep` command (its workers share it): a trial the environment failed (disk full)
    # is retried by the next command, not again by this one
    invocation: str = field(default_factory=lambda: os.environ.get(SWEEP_ID) or f"{os.getpid()}-{time.time()}")


SWEEP_ID = "SQUEEZELAB_SWEEP_ID"


# ------------------------------------------------------------------------------------------ storage


def storage_url(url: str | None, out: Path) -> str:
    """The SQLAlchemy URL: SQLite in the study folder by default; ``postgresql://`` means the psycopg
    (3) driver that the ``experiments`` extra installs (SQLAlchemy's default there is psycopg2)."""
    if url is None:
        return f"sqlite:///{(out / 'optuna.db').resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        try:
            import psycopg2  # noqa: F401  (if it is installed, SQLAlchemy's default driver works)
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    if not re.match(r"^(sqlite|postgresql(\+\w+)?|mysql(\+\w+)?)://", url):
        raise ConfigError(f"--storage: expected sqlite:///FILE or postgresql://USER@HOST/DB, got {url!r}")
    return url


def open_study(study: Study, opts: SweepOptions):
    """(optuna study, claims) for this study in the storage, created on first use."""
    import optuna
    import sqlalchemy as sa

    from squeezelab.experiments.claims import Claims

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with heartbeats is what we want: this worker keeps the heartbeat itself (_Heartbeat)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    url = storage_url(opts.storage, opts.out)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        storage = _with_schema_retry(lambda: optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=opts.heartbeat, grace_period=3 * opts.heartbeat))
    except (sa.exc.OperationalError, sa.exc.ArgumentError, ImportError, ValueError) as err:
        # ValueError: a URL sqlalchemy cannot parse (postgresql://u@h:notaport/db)
        raise ConfigError(f"--storage {opts.storage or url}: cannot open ({str(err).splitlines()[0]})") from None
    name = f"{study.name}:{study.scale}:{study.digest}"
    ostudy = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                 sampler=_sampler(study))
    return ostudy, _with_schema_retry(lambda: Claims(storage.engine, name))


def _with_schema_retry(make, attempts: int = 5):
    """``make()``, again after a pause when it lost a race to create the schema: workers started together
    on a fresh PostgreSQL database each create Optuna's tables and types, and the loser's CREATE fails with
    a unique violation (or "already exists") although the schema is then there for it to use."""
    import sqlalchemy as sa

    for attempt in range(attempts):
        try:
            return make()
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _sampler(study: Study):
    import optuna

    if study.sampler == "grid":
        return _point_sampler()
    if study.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=study.seeds[0] + os.getpid())  # workers must not propose alike
    return optuna.samplers.RandomSampler()


def _point_sampler():
    """A sampler that returns the grid point this worker has claimed: each param keeps its full list
    of choices as its distribution (so Optuna's tables and plots see the grid), but its value is the
    point's, not a draw."""
    import optuna

    class PointSampler(optuna.samplers.BaseSampler):
        point: dict = {}

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return self.point[name]

    return PointSampler()


def prepare_folder(study: Study, out: Path) -> None:
    """Create the study folder or check it holds this very study."""
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "study.json"
    record = {"digest": study.digest, "study_file": str(study.path.resolve()), **study.raw,
              "published": study.published}
    if meta.is_file():
        held = json.loads(meta.read_text())
        if held.get("digest") != study.digest:
            raise ConfigError(f"{out} holds another study ({held.get('name')}, scale {held.get('scale')}, "
                              f"digest {held.get('digest')}); use a new -o DIR")
        if held == record:
            return
    # new, or the same study whose published numbers were corrected in its file since (they are not part
    # of the digest: they change what the report sets beside ours, not what runs)
    runtime.atomic_write_json(meta, record)


# ------------------------------------------------------------------------------------------- naming


def trial_name(study: Study, trial: Trial, slot: int | None = None) -> str:
    """``sr-0.5_seed-1``: the last part of each searched key (the full key where two clash); a named
    variant by its name alone (``poly_seed-0``)."""
    short = [k.split(".")[-1] for k in trial.params]
    parts = [str(v) if k == VARIANT else f"{s if short.count(s) == 1 else k}-{_short(v)}"
             for s, k, v in zip(short, trial.params, trial.params.values())]
    prefix = [] if slot is None else [f"t{slot:03d}"]
    name = "_".join(prefix + parts + [f"seed-{trial.seed}"])
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name)


# ------------------------------------------------------------------------------------------- worker


def _short(v) -> str:
    # as written in the study (1.0, 0.125), but a sampled 0.0021438515285302196 as 0.00214385
    return f"{v:.6g}" if isinstance(v, float) and len(str(v)) > 8 else str(v)


def run_worker(study: Study, opts: SweepOptions, log=print) -> dict:
    """Run points until none is left to claim and none is running elsewhere; returns counts."""
    prepare_folder(study, opts.out)
    ostudy, claims = open_study(study, opts)
    counts = {"ran": 0, "pruned": 0, "failed": 0}
    points = _points(study)
    while True:
        _fail_stale(ostudy)
        todo, running = _open_points(ostudy, claims, points, opts.invocation)
        if not todo and not running:
            return counts
        if not todo:  # the rest is held by live workers: wait for them to finish or go stale
            time.sleep(opts.poll)
            continue
        key, previous = todo[(opts.worker) % len(todo)]  # workers start at different points
        outcome = _run_point(study, opts, ostudy, claims, points[key], key, previous, log, len(points))
        if outcome:
            counts[outcome] += 1


def _points(study: Study) -> dict[str, tuple[Trial | None, int | None]]:
    """key -> (trial, slot): the grid's points, or the n_trials slots of random / TPE."""
    if study.sampler == "grid":
        return {t.key: (t, None) for t in study.trials()}
    return {f"slot:{i}": (None, i) for i in range(study.n_trials)}


def _fail_stale(ostudy) -> None:
    import optuna

    optuna.storages.fail_stale_trials(ostudy)


def _open_points(ostudy, claims, points, invocation: str = "") -> tuple[list[tuple[str, int | None]], int]:
    """Points this worker may claim (key, holder to swap from or None), and how many run elsewhere."""
    trials = {t._trial_id: t for t in ostudy.get_trials(deepcopy=False)}
    holders = claims.holders()
    todo, running = [], 0
    for key in points:
        holder = trials.get(holders.get(key))
        if holder is None:
            todo.append((key, None))
        elif holder.state.name == "RUNNING":
            running += 1
        elif holder.state.name == "FAIL" and not holder.user_attrs.get("run_failed"):
            if holder.user_attrs.get("env_failed") and holder.user_attrs.get("invocation") == invocation:
                continue  # the environment failed it during this very command: the next one retries
            todo.append((key, holder._trial_id))  # its worker died, or the environment failed it before
    return todo, running


def _run_point(study, opts, ostudy, claims, point, key, previous, log, total) -> str | None:
    trial, slot = point
    otrial = ostudy.ask()
    # Beat before claiming: a RUNNING trial without any heartbeat would never go stale.
    beat = _Heartbeat(ostudy, otrial._trial_id, opts.heartbeat)
    try:
        if not claims.claim(key, otrial._trial_id, previous):  # another worker won this point just now
            otrial.set_user_attr("skipped", "point claimed by another worker")
            ostudy.tell(otrial, state=_state("PRUNED"))
            return None
        otrial.set_user_attr("key", key)
        if trial is None:
            return _run_sampled(study, opts, ostudy, otrial, slot, previous, log, total)
        return _run_grid(study, opts, ostudy, otrial, trial, log, total)
    except KeyboardInterrupt:  # Ctrl-C: free the point now rather than after 3 missed heartbeats
        if ostudy._storage.get_trial(otrial._trial_id).state.name == "RUNNING":  # not told yet
            ostudy.tell(otrial, state=_state("FAIL"))
        raise
    finally:
        beat.stop()


def _state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def _run_grid(study, opts, ostudy, otrial, trial: Trial, log, total) -> str:
    ostudy.sampler.point = trial.params  # recorded in Optuna with their grid's choices
    for k, v in trial.params.items():
        otrial.suggest_categorical(k, study.space[k])
    otrial.set_user_attr("seed", trial.seed)
    cfg, m, reason = _checked(study, opts, trial)
    name = trial_name(study, trial)
    if reason:
        return _prune(opts.out, ostudy, otrial, name, m, reason, log, total)
    result = run_trial(cfg, opts.out, name)
    _hparams(opts.out, result, {**trial.params, study.seed_key: trial.seed})
    return _tell(ostudy, otrial, [result], name, m, log, total, study.metric, opts.invocation)


def _run_sampled(study, opts, ostudy, otrial, slot, previous, log, total) -> str:
    params = {k: _suggest(otrial, k, dom) for k, dom in study.space.items()}
    if previous is not None:
        _drop_unfinished(opts.out, slot)
    cfg, m, reason = _checked(study, opts, Trial(params, study.seeds[0]))
    name = trial_name(study, Trial(params, study.seeds[0]), slot)
    if reason:
        return _prune(opts.out, ostudy, otrial, name, m, reason, log, total)
    results = []
    for seed in study.seeds:  # a sampled variant runs under every seed; its value is their mean
        t = Trial(params, seed)
        results.append(run_trial(study.config(t, opts.extra), opts.out, trial_name(study, t, slot)))
        _hparams(opts.out, results[-1], {**params, study.seed_key: seed})
    return _tell(ostudy, otrial, results, name, m, log, total, study.metric, opts.invocation)


def _suggest(otrial, key: str, dom):
    if isinstance(dom, list):
        return otrial.suggest_categorical(key, dom)
    if all(isinstance(dom[b], int) for b in ("low", "high")) and not dom["log"]:
        return otrial.suggest_int(key, dom["low"], dom["high"])
    return otrial.suggest_float(key, dom["low"], dom["high"], log=dom["log"])


def _drop_unfinished(out: Path, slot: int) -> None:
    """A taken-over slot samples anew; the dead attempt's unfinished folders are no results."""
    for run in (out / "runs").glob(f"t{slot:03d}_*"):
        if runtime.run_status(run) is None:
            shutil.rmtree(run)


def _checked(study, opts, trial):
    cfg = study.config(trial, opts.extra)
    m = measure(cfg)
    return cfg, m, violations(m, study.constraints)


def _prune(out: Path, ostudy, otrial, name, m, reason, log, total) -> str:
    # a pruned point has no run folder: this file is what the report lists it from
    (out / "pruned").mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_json(out / "pruned" / f"{name}.json", {"trial": name, "params": otrial.params,
                                                                 "reason": reason, "measure": m})
    otrial.set_user_attr("pruned", reason)
    otrial.set_user_attr("measure", m)
    ostudy.tell(otrial, state=_state("PRUNED"))
    log(f"[{_finished(ostudy)}/{total}] {name}: pruned before training ({reason})")
    return "pruned"


def _tell(ostudy, otrial, results, name, m, log, total, metric, invocation: str = "") -> str:
    otrial.set_user_attr("measure", m)
    otrial.set_user_attr("runs", [r["run"] for r in results])
    failed = [r for r in results if r["status"] != "finished"]
    if failed and failed[0].get("environment"):  # disk full, read-only: retried by the next sweep command
        otrial.set_user_attr("env_failed", failed[0]["error"])
        otrial.set_user_attr("invocation", invocation)
        ostudy.tell(otrial, state=_state("FAIL"))
        log(f"[{_finished(ostudy)}/{total}] {name}: FAILED by the environment ({failed[0]['error']}; log "
            f"{failed[0]['log']}); the next run of this sweep retries it")
        return "failed"
    if failed:
        otrial.set_user_attr("run_failed", failed[0]["error"])  # a real failure: not retried
        ostudy.tell(otrial, state=_state("FAIL"))
        log(f"[{_finished(ostudy)}/{total}] {name}: FAILED ({failed[0]['error']}; log {failed[0]['log']})")
        return "failed"
    values = [r["best"][metric] for r in results]
    ostudy.tell(otrial, sum(values) / len(values))
    shown = "  ".join(f"{100 * v:.2f}%" for v in values)
    log(f"[{_finished(ostudy)}/{total}] {name}: {metric} {shown}  {m['params']:,} params  "
        f"{m['size_mb']:.3f} MB  {m['flops'] / 1e6:.1f} MFLOPs  -> {results[0]['run']}")
    return "ran"


def _finished(ostudy) -> int:
    return sum(t.state.name in DONE or t.user_attrs.get("run_failed") is not None
               or t.user_attrs.get("env_failed") is not None
               for t in ostudy.get_trials(deepcopy=False) if "skipped" not in t.user_attrs)


class _Heartbeat:
    """Optuna's heartbeat for an ask/tell trial (optimize() runs one itself; ask() does not)."""

    def __init__(self, ostudy, trial_id: int, interval: int):
        self._stop = threading.Event()
        storage = ostudy._storage
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)
        self._thread.start()

    def _beat(self, storage, trial_id, interval):
        while True:
            storage.record_heartbeat(trial_id)
            if self._stop.wait(interval):
                return

    def stop(self):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------- one trial


def run_trial(cfg, out: Path, name: str) -> dict:
    """Train ``cfg`` into ``out/runs/<name>`` in a subprocess, resuming what a killed attempt left; a
    finished folder is never trained again. Returns {"run", "status", "best", "error", "log"}."""
    run_dir, logs = out / "runs" / name, out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rc = None  # a finished folder is not trained again
    if runtime.run_status(run_dir) != "finished":
        cmd = _train_command(cfg, run_dir, logs / f"{name}.yaml")
        with open(logs / f"{name}.log", "ab") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                check=False).returncode
    summary = _summary(run_dir)
    last = _last_line(logs / f"{name}.log") if rc else ""
    error = summary.get("error") or (None if summary else f"no summary.json: `squeezelab train` exited {rc}: {last}")
    # exit 1 with squeezelab's own one-line message: the environment (a bug's traceback exits 1 too, but
    # its last line is the exception's)
    environment = rc == 1 and last.startswith("squeezelab train: error:")
    return {"run": str(run_dir.relative_to(out)), "status": summary.get("status", "failed") if not environment else "failed",
            "best": summary.get("best") or {}, "error": last if environment else error, "log": str(logs / f"{name}.log"),
            "environment": environment}


def _hparams(out: Path, result: dict, params: dict) -> None:
    """A finished trial's parameters and scores for TensorBoard's HParams tab (when installed)."""
    from squeezelab.engine.events import write_hparams

    if result["status"] != "finished":
        return
    summary = _summary(out / result["run"])
    test = (summary.get("selection") or {}).get("test") or {}
    scores = {f"val_{k}": result["best"].get(k) for k in ("top1", "top5")}  # the kept epoch's
    scores.update({f"test_{k}": test.get(k) for k in ("top1", "top5")})
    write_hparams(out / result["run"], params, scores)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _train_command(cfg, run_dir: Path, cfg_path: Path) -> list[str]:
    base = [sys.executable, "-m", "squeezelab", "train", "--no-progress"]
    if (run_dir / "last.safetensors").is_file():  # a killed attempt: continue from its checkpoint
        return base + ["--resume", str(run_dir)]
    if run_dir.exists():  # killed before its first checkpoint: nothing to keep
        shutil.rmtree(run_dir)
    runtime.atomic_write_text(cfg_path, dump_config(cfg))
    return base + [str(cfg_path), "--run-dir", str(run_dir)]


def _summary(run_dir: Path) -> dict:
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    if data.get("status") == "finished" and data.get("best", {}).get("value") is not None:
        data["best"] = {"top1": data["best"]["value"], "top5": data["best"].get("top5")}
    return data


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the worker dies (Linux), so a kill -9 of the worker stops its run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


# ------------------------------------------------------------------------------------------ workers


def run_sweep(study: Study, opts: SweepOptions, workers: int, argv: list[str], log=print) -> int:
    """``workers`` == 1: this process is the worker. More: as many worker processes of this same
    command, sharing the storage; returns the worst exit code."""
    started = time.time()
    if workers <= 1:
        counts = run_worker(study, opts, log)
        log(f"{study.name} ({study.scale}): {_summary_line(study, opts)}  (this worker: ran {counts['ran']}, "
            f"pruned {counts['pruned']}, failed {counts['failed']})")
        code = 1 if counts["failed"] else 0
        if opts.worker == 0 and not _is_spawned_worker(argv):
            _record_wall(opts.out, started, workers, code, counts["ran"])
        return code
    prepare_folder(study, opts.out)
    open_study(study, opts)  # create the study once, before the workers race to
    _warn_oversubscribed(study, opts, workers, log)
    env = {**os.environ, SWEEP_ID: opts.invocation}  # the workers are one command
    procs = [subprocess.Popen([sys.executable, "-m", "squeezelab", "sweep", *argv, "--workers", "1",
                               "--worker-index", str(i), "--spawned"], preexec_fn=_die_with_parent, env=env)
             for i in range(workers)]
    codes = [p.wait() for p in procs]
    _record_wall(opts.out, started, workers, max(codes), None)
    return max(codes)


def _is_spawned_worker(argv: list[str]) -> bool:
    return "--spawned" in argv


def _record_wall(out: Path, started: float, workers: int, code: int, ran: int | None) -> None:
    """One line per `squeezelab sweep` invocation in sweeps.jsonl: the real wall time the report sets
    beside the --dry-run estimate (a resumed study has several lines; the report sums them)."""
    line = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_s": round(time.time() - started, 1), "workers": workers, "exit": code,
            "cores": runtime.available_cores(), **({"ran": ran} if ran is not None else {})}
    try:
        with open(out / "sweeps.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:  # the runs are what matter; a missing timing line must not fail a finished sweep
        pass


def _warn_oversubscribed(study: Study, opts: SweepOptions, workers: int, log) -> None:
    """A fixed train.threads x workers above the cores makes every trial wait on the others' time
    slices: 2 workers x 2 threads on 2 cores took 321-336 s for 4 runs against 133-142 s with 1 thread
    each (results/sweep_workers.md). The automatic choice (threads unset: the idle cores at the start)
    gave each trial 1 thread there."""
    threads = study.config(study.trials()[0] if study.sampler == "grid" else Trial({}, study.seeds[0]),
                           opts.extra).train.threads
    cores = runtime.available_cores()
    if threads and threads * workers > cores:
        log(f"warning: {workers} workers x train.threads={threads} = {threads * workers} threads on {cores} "
            f"cores: trials will slow each other down (measured 2.3x on 2 cores); leave train.threads unset "
            f"or use --set train.threads={max(1, cores // workers)}")


def _summary_line(study: Study, opts: SweepOptions) -> str:
    ostudy, _ = open_study(study, opts)
    states = [t for t in ostudy.get_trials(deepcopy=False) if "skipped" not in t.user_attrs]
    n = lambda s: sum(t.state.name == s for t in states)  # noqa: E731
    failed = sum(t.user_attrs.get("run_failed") is not None or t.user_attrs.get("env_failed") is not None
                 for t in states)
    return (f"{n('COMPLETE')} complete, {n('PRUNED')} pruned, {failed} failed, {n('FAIL') - failed} killed "
            f"and re-run, {n('RUNNING')} running")


# ------------------------------------------------------------------------------------------ dry run


def plan(study: Study, extra: dict | None = None) -> list[dict]:
    """The trials a sweep would run, each measured: name, params, seed, params/MB/FLOPs, whether a
    constraint prunes it, and its cost in training FLOPs per training image (3 x forward x epochs).
    Random / TPE: one row per choice of each searched key (what the space spans)."""
    if study.sampler == "grid":
        trials = study.trials()
    else:
        trials = [Trial({k: v}, study.seeds[0]) for k, dom in study.space.items()
                  for v in (dom if isinstance(dom, list) else [dom["low"], dom["high"]])]
    rows = []
    for t in trials:
        cfg = study.config(t, extra)
        m = measure(cfg)
        steps = cfg.train.max_steps
        cost = 3 * m["flops"] * (steps * cfg.data.batch_size if steps else cfg.train.epochs)
        rows.append({"name": trial_name(study, t), "trial": t, "seed": t.seed, **m,
                     "pruned": violations(m, study.constraints), "epochs": cfg.train.epochs,
                     "cost_flops": cost, "cost_per": "run" if steps else "training image"})
    return rows
