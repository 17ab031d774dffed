"""One training run: build everything from the config (data, model, optimiser, run folder), then loop
over epochs writing ``runs/<id>/``. Used by ``engine.fit``; each method fits on a screen.

Run folder (every file written atomically; only rank 0 writes):
    config.yaml       the resolved config (num_classes and preset filled in)
    environment.json  git commit, library versions, device, threads, resolved amp/channels_last
    metrics.jsonl     one line per epoch: epoch, train_loss, val_loss, top1, top5, lr, epoch_seconds,
                      images_per_second (training images / training seconds, all ranks)
    last.safetensors  checkpoint after the latest good epoch (also written before epoch 1)
    best.safetensors  weights (no optimizer state) with the best val top-1 so far
    summary.json      written when the run ends: status finished / failed, best, final metrics

Crash consistency: at the end of an epoch last.safetensors is written first and is the commit record
(weights, optimizer, early-stopping / best state and the epoch's metrics row in its metadata); then
best.safetensors and metrics.jsonl, both derivable from it. A kill between any two writes leaves a
folder that ``--resume`` repairs (``_reconcile``) before going on, so the resumed run ends identical
to one never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
from pathlib import Path

import torch
from torch import nn

from squeezelab import runtime
from squeezelab.config import RunConfig, config_from_dict, config_to_dict, dump_config
from squeezelab.weights import checkpoint as ckpt
from squeezelab.weights.model import classes_fit
from squeezelab.engine.loop import RunState, StepOptions, early_stopping, evaluate, train_one_epoch
from squeezelab.engine.events import EventLog
from squeezelab.engine.metrics import MetricsLog, Progress, log
from squeezelab.engine.optim import build_optimizer, set_lr
from squeezelab.engine.schedules import Plateau, lr_factor
from squeezelab.errors import ConfigError, TrainingError


def fit(config: RunConfig, *, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Train as ``config`` says; returns the run folder (``runs/<id>/``). ``resume``: a run folder
    interrupted earlier, continued from its last checkpoint. Under ``torchrun`` this is DDP."""
    run, threads, ok = None, torch.get_num_threads(), False
    try:
        run = Run.start(config, resume=Path(resume) if resume else None, progress=progress)
        run.loop()
        ok = True
    finally:
        torch.set_num_threads(threads)  # train.threads applies to this run only
        if run is not None:
            run.model = None  # drop the DDP wrapper (its reducer talks to the group) before leaving it
        runtime.shutdown_distributed(barrier=ok)
    return run.run_dir


class Run:
    """Everything one run holds. Build with ``Run.start``, then ``loop()`` (``fit`` does both and
    leaves the process group / thread count as it found them)."""

    @classmethod
    def start(cls, cfg: RunConfig, *, resume: Path | None = None, progress: bool = True) -> "Run":
        if cfg.train.epochs < 1 and not (cfg.prune.enabled or cfg.share.enabled):  # 0: apply them, train nothing
            raise ConfigError(f"train.epochs: must be >= 1 to train (0 only applies a prune / share section), "
                              f"got {cfg.train.epochs}")
        self = cls()
        self.info = runtime.dist_info_from_env()
        self.device = runtime.choose_device(cfg.train.device, self.info.local_rank)
        runtime.init_distributed(self.info, self.device)
        if self.device.type == "cpu":  # fit() restores the caller's thread count afterwards
            torch.set_num_threads(runtime.choose_threads(cfg.train.threads))
        self.progress = progress and self.info.is_main
        amp_dtype = runtime.resolve_amp(cfg.train.amp, self.device)
        scaler = torch.amp.GradScaler(self.device.type) if runtime.needs_grad_scaler(amp_dtype) else None
        self.opts = StepOptions(amp_dtype, runtime.resolve_channels_last(cfg.train.channels_last, self.device),
                                cfg.train.grad_clip, cfg.train.max_steps, scaler=scaler,
                                compile=runtime.resolve_compile(cfg.train.compile, self.device))
        runtime.seed_everything(cfg.train.seed)
        resumed = self._read_resume(resume)
        self.resuming = resumed is not None
        self.cfg = self._load_data(cfg)
        if resume is not None:
            _check_resume_config(resume, self.cfg, resumed)
        self._build_model(resumed, resume)
        self.opts.hooks = self.compression.hooks
        self.run_dir = self._open_run_dir(resume, fresh=resumed is None)
        _warn_about_schedule(self.cfg, self.info.is_main)
        self.state = RunState() if resumed is None else self._restore(resume, resumed)
        self._wrap_model()
        return self

    # ---------------------------------------------------------------- building

    def _load_data(self, cfg: RunConfig) -> RunConfig:
        """Load train/val splits and the preset; returns cfg with num_classes and preset resolved."""
        from squeezelab.data import default_preset_for, get_preset, load_dataset

        cfg = self._model_from_weights(cfg)
        d = cfg.data
        preset_name = d.preset or default_preset_for(d.dataset)
        self.preset = get_preset(preset_name)
        common = dict(preset=preset_name, val_fraction=d.val_fraction, split_scheme=d.split_scheme,
                      seed=cfg.train.seed, cache_dir=d.cache_dir, in_memory=d.in_memory, download=d.download,
                      class_map=d.class_map)
        self.data_args = common
        with runtime.main_process_first(self.info):  # under torchrun: one download / decode, then the cache
            self.train_set = _limit(load_dataset(d.dataset, d.data_dir, "train", **common), d.limit, cfg.train.seed)
            self.val_set = _limit(load_dataset(d.dataset, d.data_dir, _val_split(cfg), **common), d.limit, 0)
        num_classes = cfg.model.num_classes or self.train_set.num_classes
        # fewer: labels out of range; more: outputs never trained (unless the data names no classes)
        if not classes_fit(self.train_set.num_classes, num_classes, getattr(self.train_set, "classes_declared", True)):
            raise ConfigError(f"model.num_classes is {num_classes} but {d.dataset} has {self.train_set.num_classes} "
                              f"classes{' (after data.class_map)' if d.class_map else ''}: leave it unset"
                              + ("" if d.class_map else ", or map its classes onto the model's with data.class_map "
                                 "(Tiny ImageNet onto ImageNet's 1000: synset_words.txt)"))
        if d.batch_size % self.info.world_size:
            raise ConfigError(f"data.batch_size {d.batch_size} is not divisible by {self.info.world_size} processes")
        self._make_loaders(cfg)
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes),
                                   data=dataclasses.replace(d, preset=preset_name))

    def _make_loaders(self, cfg: RunConfig) -> None:
        from squeezelab.engine.data_io import eval_loader, train_loader

        per_rank = cfg.data.batch_size // self.info.world_size
        eval_bs = cfg.data.eval_batch_size or 2 * per_rank
        workers = cfg.data.workers
        self.train_loader = train_loader(self.train_set, per_rank, cfg.train.seed, self.device, self.info, workers)
        self.val_loader = eval_loader(self.val_set, eval_bs, self.device, self.info, workers)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.batch_size {cfg.data.batch_size} is larger than the training set "
                              f"({len(self.train_set)} images)")

    def _model_from_weights(self, cfg: RunConfig) -> RunConfig:
        """model.weights: the run's model is the one the weights describe (model.options given in the
        config override theirs); a different model name is an error. (A resumed run's config.yaml
        is resolved already, and its weights come from its checkpoint.)"""
        if cfg.model.weights is None or self.resuming:
            return cfg
        from squeezelab.weights import load_weights

        self.init_weights = load_weights(cfg.model.weights)
        w = self.init_weights
        if w.model_name is None:
            return cfg
        if cfg.model.name != w.model_name:
            raise ConfigError(f"model.weights {cfg.model.weights} holds {w.model_name}, but model.name is "
                              f"{cfg.model.name}: set model.name={w.model_name}")
        options = types.MappingProxyType({**dict(w.model_options), **dict(cfg.model.options)})
        model = dataclasses.replace(cfg.model, options=options,
                                    num_classes=cfg.model.num_classes or w.num_classes)
        data = cfg.data if cfg.data.preset or not w.preset else dataclasses.replace(cfg.data, preset=w.preset)
        return dataclasses.replace(cfg, model=model, data=data)

    def _read_resume(self, resume: Path | None):
        """The run's last checkpoint; None for a new run, or for a folder killed before its first
        checkpoint was written (it starts again from the beginning, in place)."""
        if resume is None:
            return None
        last = resume / "last.safetensors"
        if not last.exists() and not (resume / "metrics.jsonl").exists():
            log(f"{resume} has no checkpoint yet: starting it from the beginning")
            return None
        return ckpt.read_checkpoint(last)

    def _build_model(self, resumed, resume: Path | None) -> None:
        from squeezelab.engine import compression
        from squeezelab.models import create_model
        from squeezelab.weights import model_from_weights

        m, cfg = self.cfg.model, self.cfg
        if resumed is None and m.weights is not None:  # (options: the config's, resolved over the file's)
            model = model_from_weights(self.init_weights, name=m.name, options=dict(m.options),
                                       num_classes=m.num_classes)
        else:
            model = create_model(m.name, num_classes=m.num_classes, **dict(m.options))
        if resumed is not None:
            try:
                model.load_state_dict(resumed.model_state)  # plain weights; codebooks come back below
            except RuntimeError as err:  # config.yaml edited by hand: say so in one line, not a key list
                raise ConfigError(f"--resume {resume}: its last.safetensors does not fit the model its config "
                                  f"describes ({str(err).splitlines()[0].strip()})") from None
        model = _sync_bn(model.to(self.device), cfg.train.sync_bn, self.info, self.device)
        total = cfg.train.epochs * self.steps_per_epoch
        state = None if resumed is None else (resumed.meta.get("compression") or {}, resumed.extra)
        self.compression = compression.setup(cfg, model, steps_per_epoch=self.steps_per_epoch, total_steps=total,
                                             resume=state, data=(self.train_set, self.preset))
        if self.opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = self.raw_model = model
        self.optimizer = build_optimizer(model, cfg.optim)
        self.teacher = self._teacher()
        self.criterion = compression.criterion(cfg, self.teacher)
        self.plateau = Plateau(cfg.schedule.plateau_factor, cfg.schedule.plateau_patience)

    def _teacher(self) -> nn.Module | None:
        """distill.teacher's model, frozen, on the run's device and layout."""
        from squeezelab.engine.compression import teacher_path
        from squeezelab.weights import load_weights, model_from_weights

        path = teacher_path(self.cfg) if self.cfg.distill.enabled else None
        if path is None:
            return None
        w = load_weights(path)  # a file that names its model builds that; else the run's own model
        options = None if w.model_name else dict(self.cfg.model.options)
        teacher = model_from_weights(w, name=w.model_name or self.cfg.model.name, options=options,
                                     num_classes=self.cfg.model.num_classes)
        teacher = teacher.to(self.device).eval()
        return teacher.to(memory_format=torch.channels_last) if self.opts.channels_last else teacher

    def _wrap_model(self) -> None:
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.raw_model, device_ids=ids)
        if self.opts.compile:
            self.model = torch.compile(self.model)

    def _open_run_dir(self, resume: Path | None, fresh: bool) -> Path:
        if resume is not None:
            if runtime.run_status(resume) == "finished":
                raise ConfigError(f"{resume} is a finished run; it is never overwritten (start a new run)")
            if self.info.is_main:
                runtime.remove_stale_temps(resume)
            if not fresh:  # (a fresh start in place writes everything below)
                if self.info.is_main:  # e.g. train.epochs raised: the folder says what the run now is
                    runtime.atomic_write_text(resume / "config.yaml", dump_config(self.cfg))
                return resume
            run_dir = resume
        else:
            name = str(runtime.new_run_dir(self.cfg)) if self.info.is_main else None
            run_dir = Path(runtime.broadcast_str(name, self.info))
        self.run_dir = run_dir
        if self.info.is_main:
            runtime.atomic_write_text(run_dir / "config.yaml", dump_config(self.cfg))
            resolved = {"device": str(self.device), "amp": str(self.opts.amp_dtype or "off"),
                        "channels_last": self.opts.channels_last, "compile": self.opts.compile}
            runtime.atomic_write_json(run_dir / "environment.json",
                                      runtime.environment_record(self.device, self.info, resolved))
            self._save("last.safetensors", None)  # a good checkpoint exists before the first step
        return run_dir

    def _restore(self, run_dir: Path, c) -> RunState:
        """Load last.safetensors of an interrupted run into optimiser and state (the model has it)."""
        if c.optim_state is not None:
            self.optimizer.load_state_dict(c.optim_state)
        if self.opts.scaler is not None and c.meta.get("grad_scaler"):
            self.opts.scaler.load_state_dict(c.meta["grad_scaler"])  # fp16: resume with the same loss scale
        state = RunState(**c.meta["state"])
        self.plateau.load_state_dict(state.plateau) if state.plateau else None
        if self.info.is_main:
            self._reconcile(run_dir, state, c.meta.get("metrics"))
            log(f"resuming {run_dir} after epoch {state.epoch} (step {state.step})")
        return state

    def _reconcile(self, run_dir: Path, state: RunState, last_row: dict | None) -> None:
        """Make the folder agree with last.safetensors (the commit record) after a kill anywhere:
        drop the rows of an uncommitted epoch, re-derive the
        committed epoch's metrics row and best.safetensors if the kill came before they were written."""
        metrics = MetricsLog(run_dir / "metrics.jsonl")
        metrics.truncate(state.epoch)
        if last_row and (not metrics.rows or metrics.rows[-1]["epoch"] < last_row["epoch"] == state.epoch):
            metrics.append(last_row)
        best_epoch = state.best.get("epoch") if self.cfg.train.select == "best" else None
        if best_epoch is not None:
            held = (ckpt.read_checkpoint_meta(run_dir / "best.safetensors") or {}).get("epoch")
            if held != best_epoch and best_epoch == state.epoch:  # the model holds that epoch's weights now
                self.state = state
                self._save("best.safetensors", last_row, optimizer=False)
            elif held != best_epoch:
                log(f"warning: {run_dir}/best.safetensors holds epoch {held}, not the best epoch {best_epoch} "
                    "(a folder written by an older squeezelab); eval --weights the checkpoint you mean")
        (run_dir / "summary.json").unlink(missing_ok=True)  # a failed attempt's summary

    # ---------------------------------------------------------------- looping

    def loop(self) -> None:
        t0, cfg = time.perf_counter(), self.cfg
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl") if self.info.is_main else None
        self.events = EventLog(self.run_dir, self.state.epoch) if self.info.is_main else None
        total = cfg.train.epochs * self.steps_per_epoch
        while self.state.epoch < cfg.train.epochs and not self._done():
            try:
                row = self._one_epoch(total)
            except TrainingError as err:
                self._finish("failed", t0, error=str(err))
                raise TrainingError(f"{err}; last good checkpoint kept: {self.run_dir / 'last.safetensors'} "
                                    f"(epoch {self.state.epoch})") from None
            self._after_epoch(row)
        self._finish("finished", t0)

    def _done(self) -> bool:
        s = self.state
        return s.stopped_early or (self.opts.max_steps is not None and s.step >= self.opts.max_steps)

    def _one_epoch(self, total_steps: int) -> dict:
        epoch, cfg = self.state.epoch, self.cfg
        seed = runtime.epoch_seed(cfg.train.seed, epoch, self.info.rank)
        torch.manual_seed(seed)  # dropout etc.: a pure function of the epoch (exact resume)
        gen = torch.Generator(self.device).manual_seed(seed)  # augmentation
        self.train_loader.set_epoch(epoch)
        lr_at = lambda step: set_lr(self.optimizer, cfg.optim.lr, self.plateau.scale  # noqa: E731
                                    * self.compression.lr_factor(step)
                                    * lr_factor(cfg.schedule, step, self.steps_per_epoch, total_steps))
        bar = Progress(self.train_loader, len(self.train_loader), f"epoch {epoch + 1}/{cfg.train.epochs}",
                       enabled=self.progress)
        t = time.perf_counter()
        stats = train_one_epoch(self.model, self.train_loader, self.preset, self.optimizer, self.criterion,
                                device=self.device, lr_at=lr_at, start_step=self.state.step, opts=self.opts,
                                generator=gen, progress=bar)
        train_seconds = time.perf_counter() - t
        val = evaluate(self.model, self.val_loader, self.preset, self.device, amp=self.opts.amp_dtype,
                       channels_last=self.opts.channels_last, distributed=self.info.enabled, teacher=self.teacher)
        if not math.isfinite(val["loss"]):
            raise TrainingError(f"validation loss became {val['loss']} after epoch {epoch + 1}")
        self.state.step += stats["steps"]
        return {"epoch": epoch + 1, "train_loss": stats["train_loss"], "val_loss": val["loss"],
                "top1": val["top1"], "top5": val["top5"], "lr": stats["lr"], "step": self.state.step,
                "epoch_seconds": round(time.perf_counter() - t, 3),
                "images_per_second": round(stats["images"] / max(train_seconds, 1e-9), 1),
                **{k: val[k] for k in ("agreement", "kl") if k in val}}

    def _after_epoch(self, row: dict) -> None:
        s, es = self.state, self.cfg.train.early_stopping
        s.epoch = row["epoch"]
        # (pruning: only epochs that end in the run's final form compete for best.safetensors)
        improved = (s.best["value"] is None or row["top1"] > s.best["value"]) and \
            self.compression.final_form(s.step - 1)  # the form of the last step taken
        if improved:
            s.best = {"metric": "top1", "value": row["top1"], "top5": row["top5"], "epoch": s.epoch}
        s.best_top5, s.es_bad_epochs, s.stopped_early = early_stopping(
            s.best_top5, s.es_bad_epochs, row["top5"], es.patience, es.top5_threshold)
        if self.cfg.schedule.name == "plateau":
            self.plateau.update(row["val_loss"])
        s.plateau = self.plateau.state_dict()
        if self.info.is_main:
            self._save("last.safetensors", row)  # the commit record: everything below derives from it
            if improved and self.cfg.train.select == "best":
                self._save("best.safetensors", row, optimizer=False)
            self.metrics.append(row)
            self.events.epoch(row)
            log(_format_row(row, self.cfg.train.epochs))

    def _save(self, name: str, row: dict | None, optimizer: bool = True) -> None:
        m = self.cfg.model
        state = getattr(self, "state", None) or RunState()
        meta = {"model": {"name": m.name, "num_classes": m.num_classes, "options": dict(m.options)},
                "preset": self.cfg.data.preset, "dataset": self.cfg.data.dataset,
                "epoch": state.epoch, "step": state.step, "best": state.best, "metrics": row,
                "state": state.to_meta(), "config": config_to_dict(self.cfg),
                "grad_scaler": self.opts.scaler.state_dict() if self.opts.scaler is not None else None,
                "classes": output_classes(self.train_set.classes, m.num_classes,
                                          getattr(getattr(self, "init_weights", None), "classes", None))}
        meta["compression"], extra = self.compression.state(self.raw_model)
        ckpt.save_checkpoint(self.run_dir / name, self.raw_model, meta=meta,
                             optimizer=self.optimizer if optimizer else None, extra_tensors=extra)

    def _finish(self, status: str, t0: float, error: str | None = None) -> None:
        if not self.info.is_main:
            return
        rows = self.metrics.rows if self.metrics else []
        summary = {"status": status, "run_id": self.run_dir.name, "epochs_completed": self.state.epoch,
                   "steps": self.state.step, "best": self.state.best, "final": rows[-1] if rows else None,
                   "stopped_early": self.state.stopped_early, "selection": self._selection(status, rows),
                   "seconds": round(time.perf_counter() - t0, 2), "error": error}
        runtime.atomic_write_json(self.run_dir / "summary.json", summary)
        if getattr(self, "events", None) is not None:
            self.events.close()
        if status == "finished" and self.cfg.train.select == "best" and _test_split(self.cfg) is None:
            log(f"note: no validation split (data.val_fraction 0): best.safetensors was chosen on the "
                f"{_val_split(self.cfg)} split, which is also where it is scored (optimistic); set "
                f"data.val_fraction (e.g. 0.1) to select on validation, or train.select=last")

    def _selection(self, status: str, rows: list[dict]) -> dict:
        """What the run kept, what chose it, and its score on the test split when the per-epoch split
        was a validation split (so that the reported test accuracy was not used to pick it)."""
        cfg, split = self.cfg, _val_split(self.cfg)
        test = _test_split(cfg)
        keep = "best" if cfg.train.select == "best" else "last"
        out = {"kept": f"{keep}.safetensors", "select": keep,
               "epoch": self.state.best.get("epoch") if keep == "best" else self.state.epoch,
               "per_epoch_split": split,
               "selected_on": None if keep == "last" else ("test (optimistic: as the seed reports chose their "
                                                           "best epoch)" if test is None else f"{split} (validation)"),
               "test": None}
        if status == "finished" and test is not None and rows:
            out["test"] = {"split": test, **self._score_kept(keep, test)}
        elif status == "finished" and keep == "last" and rows:  # scored each epoch; nothing chosen on it
            out["test"] = {"split": split, **{k: rows[-1][k] for k in ("top1", "top5")}, "loss": rows[-1]["val_loss"]}
        return out

    def _score_kept(self, keep: str, split: str) -> dict:
        from squeezelab.data import load_dataset
        from squeezelab.engine.data_io import eval_loader
        from squeezelab.weights import load_weights, model_from_weights

        d, m = self.cfg.data, self.cfg.model
        data = load_dataset(d.dataset, d.data_dir, split, **self.data_args)
        model, best = self.raw_model, self.run_dir / "best.safetensors"
        if keep == "best" and best.exists():  # a plain model: the run's may carry pruning / sharing hooks
            model = model_from_weights(load_weights(best), name=m.name, options=dict(m.options),
                                       num_classes=m.num_classes)
            model = model.to(self.device)
            model = model.to(memory_format=torch.channels_last) if self.opts.channels_last else model
        loader = eval_loader(data, d.eval_batch_size or 2 * d.batch_size, self.device, runtime.DistInfo())
        r = evaluate(model, loader, self.preset, self.device, amp=self.opts.amp_dtype,
                     channels_last=self.opts.channels_last)
        return {"top1": r["top1"], "top5": r["top5"], "loss": r["loss"], "n": r["n"]}


def output_classes(dataset_classes, num_classes: int, weights_classes=None) -> list[str] | None:
    """The names of a model's outputs, for its checkpoints: the dataset's classes when they are one per
    output; else those of the weights it started from, when they are (a labelled subset of ImageNet
    trained with 1000 outputs); else unknown (None), never a list that names other outputs."""
    for classes in (dataset_classes, weights_classes):
        if classes is not None and len(classes) == num_classes:
            return list(classes)
    return None


# Keys a resumed run may change: where things are and how long or fast it runs, not what it trains.
RESUMABLE_CHANGES = ("train.epochs", "train.threads", "train.device", "train.max_steps", "train.compile",
                     "train.early_stopping.", "data.data_dir", "data.cache_dir", "data.workers", "data.in_memory",
                     "data.download", "data.eval_batch_size", "output.")


def _check_resume_config(run_dir: Path, cfg: RunConfig, resumed) -> None:
    """A resumed run continues the run its folder holds: a change to its model, data or optimisation
    (``--set model.options.bn_fire=false``) is refused here in one line, before any weights load."""
    before = resumed.meta.get("config") if resumed is not None else None
    if before is None:
        return
    try:  # through today's dataclasses: keys added since take their defaults, old spellings today's
        before = config_to_dict(config_from_dict(before))
    except ConfigError:
        pass
    old, new = _flatten(before), _flatten(config_to_dict(cfg))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    fixed = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"--resume {run_dir}: {k} was {old.get(k)!r} in this run and would be {new.get(k)!r}; "
                          f"a resumed run keeps its model, data and optimisation (only train.epochs, threads, "
                          f"device, max_steps, compile, early_stopping and data locations may change): "
                          f"start a new run instead")
    done = resumed.meta.get("epoch", 0)
    if cfg.train.epochs < done:
        raise ConfigError(f"--resume {run_dir}: train.epochs={cfg.train.epochs} but {done} epochs are done already")
    for k in changed:
        log(f"resume: {k} {old.get(k)!r} -> {new.get(k)!r}")


def _warn_about_schedule(cfg: RunConfig, main: bool) -> None:
    """Settings that run but train nothing useful get a word (configs/cifar10_small_best.yaml with
    train.epochs=1 warmed up for the whole run and ended at chance)."""
    s, epochs = cfg.schedule, cfg.train.epochs
    if main and s.warmup_epochs >= epochs:
        log(f"warning: the lr warmup (schedule.warmup_epochs {s.warmup_epochs:g}) takes the whole run "
            f"(train.epochs {epochs}): the learning rate reaches optim.lr {cfg.optim.lr:g} only at the end, if at "
            f"all; lower it, e.g. --set schedule.warmup_epochs={epochs / 5:g}")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _test_split(cfg: RunConfig) -> str | None:
    """The split a finished run's kept weights are scored on, or None when the per-epoch split is
    already the test split (no validation split carved out)."""
    d = cfg.data
    if d.val_fraction > 0 or d.split_scheme == "pooled":
        return "test"
    from squeezelab.data.registry import get_spec

    heldout = get_spec(d.dataset).heldout
    return heldout if d.val_split and d.val_split != heldout else None


def _val_split(cfg: RunConfig) -> str:
    """The split evaluated after every epoch: data.val_split, else the carved "val" when
    val_fraction > 0 or split_scheme is "pooled", else the dataset's official held-out split."""
    if cfg.data.val_split:
        return cfg.data.val_split
    if cfg.data.val_fraction > 0 or cfg.data.split_scheme == "pooled":
        return "val"
    from squeezelab.data.registry import get_spec

    return get_spec(cfg.data.dataset).heldout


def _sync_bn(model: nn.Module, sync_bn: bool, info: runtime.DistInfo, device: torch.device) -> nn.Module:
    """train.sync_bn: BatchNorm layers -> SyncBatchNorm when several processes train (with a single
    process it changes nothing). Same parameters and state-dict keys, so checkpoints stay plain."""
    if not sync_bn or not info.enabled:
        return model
    if device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernels); "
                          "set it to false for CPU runs")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _limit(dataset, limit: int | None, seed: int):
    """The first ``limit`` images of a seeded permutation (all of them when limit is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return dataset.subset(order.sort().values, dataset.split)


def _format_row(r: dict, epochs: int) -> str:
    teacher = f"  agreement {100 * r['agreement']:.2f}%  kl {r['kl']:.4f}" if "agreement" in r else ""
    return (f"epoch {r['epoch']}/{epochs}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "
            f"top1 {100 * r['top1']:.2f}%  top5 {100 * r['top5']:.2f}%{teacher}  lr {r['lr']:.3g}  "
            f"{r['epoch_seconds']:.1f}s  {r['images_per_second']:.0f} img/s")
