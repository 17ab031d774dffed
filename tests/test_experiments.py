"""Studies, sweeps, the runs store and reports (the fast part: real sweeps of two tiny trials; the
kill -9 / PostgreSQL / browser checks are in test_experiments_slow.py)."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
from pathlib import Path

import pytest
import yaml

from squeezelab.cli import main
from tests.conftest import REPO_ROOT, SHARED_DATA as SHARED
from tests.helpers import cli_one_line_error

SMOKE = REPO_ROOT / "configs" / "digits_smoke.yaml"
STUDIES = sorted((REPO_ROOT / "experiments").glob("*.yaml"))
# One epoch of 8 steps on 128 digits, a 2-Fire SqueezeNet: a trial is the `squeezelab train` start-up.
FAST = {"train.epochs": 1, "data.limit": 128, "model.options.num_fire": 2}


def write_study(tmp_path: Path, **over) -> Path:
    study = {"name": "tiny", "base": str(SMOKE), "sampler": "grid", "seeds": {"values": [0]},
             "space": {"model.options.sr": [0.25, 1.0]}, "scales": {"smoke": {"set": dict(FAST)}}, **over}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


# ------------------------------------------------------------------------------------ study files


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "cpu", "full"])
def test_every_study_file_is_valid_at_every_scale(path, scale):
    """Each shipped study loads and every trial's config validates and builds (meta device)."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import plan

    # data_dir left out: the rest is checked on any machine; the data paths where ../shared/data exists
    study = load_study(path, scale, {"data.data_dir": None})
    rows = plan(study, {"data.data_dir": None})
    if SHARED.is_dir():
        load_study(path, scale)
    assert rows and all(r["params"] is not None and r["flops"] > 0 for r in rows)
    if study.sampler == "grid":
        assert len(rows) == len(study.trials()) == len(study.seeds) * len(study.trials()) // len(study.seeds)


@pytest.mark.parametrize("over, words", [
    ({"spaec": {}}, ["unknown key study.spaec"]),
    ({"space": {"model.options.srr": [0.5]}}, ["model.options.srr"]),  # unknown model option: at build time
    ({"space": {"optim.lrr": [0.1]}}, ["space.optim.lrr", "unknown key optim.lrr"]),
    ({"space": {"optim.lr": ["fast"]}}, ["optim.lr", "expected float"]),
    ({"sampler": "bayes"}, ["sampler", "grid, random, tpe"]),
    ({"seeds": {"values": [0, 0]}}, ["seeds", "distinct"]),
    ({"base": "nope.yaml"}, ["base recipe not found"]),
    ({"constraints": {"max_parms": 3}}, ["constraints.max_parms"]),
])
def test_bad_study_is_one_line_exit_2(tmp_path, capsys, over, words):
    path = write_study(tmp_path, **over)
    cli_one_line_error(capsys, ["sweep", str(path), "--dry-run"], *words)


def test_bad_scale_and_missing_file_are_one_line(tmp_path, capsys):
    path = write_study(tmp_path)
    cli_one_line_error(capsys, ["sweep", str(path), "--scale", "cpu"], "no scale 'cpu'")
    cli_one_line_error(capsys, ["sweep", str(tmp_path / "none.yaml")], "study file not found")
    cli_one_line_error(capsys, ["report", str(tmp_path)], "not a study folder")
    cli_one_line_error(capsys, ["runs", "ls", str(tmp_path / "nowhere")], "runs folder not found")


def test_dry_run_lists_measured_trials_and_constraint_pruning(tmp_path, capsys):
    path = write_study(tmp_path, seeds={"values": [0, 1]}, constraints={"max_params": 10000})
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("sr-")]
    assert [line.split()[0] for line in lines] == ["sr-0.25_seed-0", "sr-0.25_seed-1", "sr-1.0_seed-0", "sr-1.0_seed-1"]
    small, big = int(lines[0].split()[1].replace(",", "")), int(lines[2].split()[1].replace(",", ""))
    assert small < 10000 < big  # sr 1.0 has the larger squeeze layers
    assert "pruned: params" in lines[2] and "pruned" not in lines[0]
    assert "4 runs; estimated cost" in out
    assert not (tmp_path / "studies").exists()


# ------------------------------------------------------------------------------------ sweep + store


def test_sweep_runs_prunes_resumes_and_the_store_reads_it(tmp_path, capsys):
    """Two points (one pruned by a constraint before training) + one seed: the trial is an ordinary
    run folder; the same command again trains nothing; runs ls / compare / export read the folder."""
    path = write_study(tmp_path, seeds={"values": [0, 1]}, constraints={"max_params": 10000})
    out = tmp_path / "st"
    argv = ["sweep", str(path), "-o", str(out), "--set", "train.threads=1"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("pruned before training (params") == 2 and log.count(": top1 ") == 2, log
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["sr-0.25_seed-0", "sr-0.25_seed-1"]
    first = {p: (out / "runs" / p / "summary.json").stat().st_mtime_ns for p in runs}
    assert json.loads((out / "runs" / runs[0] / "summary.json").read_text())["status"] == "finished"
    assert main(argv) == 0  # resume: nothing left
    log = capsys.readouterr().out
    assert "this worker: ran 0, pruned 0" in log and "2 complete, 2 pruned" in log
    assert first == {p: (out / "runs" / p / "summary.json").stat().st_mtime_ns for p in runs}

    assert main(["runs", "ls", str(out), "--where", "train.seed=1", "--sort=-best.top1"]) == 0
    listing = capsys.readouterr().out
    assert "runs/sr-0.25_seed-1" in listing and "seed-0" not in listing and "1 of 2 runs" in listing
    assert main(["runs", "compare", str(out / "runs" / runs[0]), str(out / "runs" / runs[1])]) == 0
    cmp = capsys.readouterr().out
    assert "train.seed" in cmp and "model.options.sr" not in cmp  # only what differs
    assert main(["runs", "export", str(out), "--csv", str(tmp_path / "runs.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert sorted(r["train.seed"] for r in rows) == ["0", "1"] and all(r["status"] == "finished" for r in rows)
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Pruned before training" in md and "sr-1.0_seed-1 (params 15,754 > max_params 10,000)" in md
    assert "| sr=0.25 | 5,674 |" in md and "sr=1.0 |" not in md  # no run folder, no row


@pytest.mark.slow  # 4 processes importing torch: ~30 s on a quiet 2-core machine, minutes on a busy one
def test_two_worker_processes_share_the_grid(tmp_path, capsys):
    """--workers 2: two processes of the same command on one SQLite study; each point runs once."""
    path = write_study(tmp_path)
    out = tmp_path / "st"
    assert main(["sweep", str(path), "-o", str(out), "--workers", "2", "--set", "train.threads=1"]) == 0
    from squeezelab.experiments.store import load_runs

    runs = load_runs(out)
    assert sorted(r["config.model.options.sr"] for r in runs) == [0.25, 1.0]
    assert all(r["status"] == "finished" and r["epochs"] == 1 for r in runs)
    logs = sorted(p.name for p in (out / "logs").glob("*.log"))
    assert logs == ["sr-0.25_seed-0.log", "sr-1.0_seed-0.log"]
    for log in (out / "logs").glob("*.log"):
        assert log.read_text().count("epoch 1/1") == 1  # trained once, by one of the workers


def test_tpe_samples_a_float_and_a_choice_and_runs_every_seed(tmp_path, capsys):
    space = {"optim.lr": {"low": 5e-4, "high": 5e-3, "log": True}, "model.options.sr": [0.25, 0.5]}
    path = write_study(tmp_path, sampler="tpe", n_trials=1, seeds={"values": [0, 1]}, space=space)
    out = tmp_path / "st"
    assert main(["sweep", str(path), "-o", str(out), "--set", "train.threads=1"]) == 0
    log = capsys.readouterr().out
    assert "[1/1] t000_sr-" in log and "_lr-" in log and "1 complete" in log, log
    from squeezelab.experiments.store import load_runs

    runs = load_runs(out)
    assert len(runs) == 2 and sorted(r["config.train.seed"] for r in runs) == [0, 1]
    # the sampled variant runs under each seed with the same params
    assert len({(r["config.optim.lr"], r["config.model.options.sr"]) for r in runs}) == 1
    assert 5e-4 <= runs[0]["config.optim.lr"] <= 5e-3 and runs[0]["config.model.options.sr"] in (0.25, 0.5)
    # --set is part of the study's identity: without it, the folder holds another study
    cli_one_line_error(capsys, ["sweep", str(path), "-o", str(out)], "holds another study")
    assert main(["sweep", str(path), "-o", str(out), "--set", "train.threads=1"]) == 0
    assert "this worker: ran 0" in capsys.readouterr().out


def test_a_failing_trial_is_recorded_with_its_reason_and_not_retried(tmp_path, capsys):
    # 16 training images cannot fill one batch of 32: `squeezelab train` stops with one line, exit 2
    path = write_study(tmp_path, space={"model.options.sr": [0.5]},
                       scales={"smoke": {"set": {**FAST, "data.limit": 16}}})
    out = tmp_path / "st"
    assert main(["sweep", str(path), "-o", str(out)]) == 1
    log = capsys.readouterr().out
    assert "FAILED (no summary.json: `squeezelab train` exited 2: " in log and "larger than the training set" in log
    assert main(["sweep", str(path), "-o", str(out)]) == 0  # a real failure is not run again
    assert "ran 0, pruned 0, failed 0" in capsys.readouterr().out
    assert (out / "logs" / "sr-0.5_seed-0.log").read_text().count("larger than the training set") == 1


def test_the_store_index_follows_the_folders(tmp_path):
    """The index is rebuilt from the folders: a changed summary is read again, a removed run dropped."""
    import shutil

    from squeezelab.experiments.store import INDEX, load_runs

    a = fake_run(tmp_path, 0.25, 0, [0.3, 0.5])
    fake_run(tmp_path, 0.5, 0, [0.4])
    assert [r["best.top1"] for r in load_runs(tmp_path)] == [0.5, 0.4] and (tmp_path / INDEX).is_file()
    summary = json.loads((a / "summary.json").read_text())
    summary["best"]["value"] = 0.75
    (a / "summary.json").write_text(json.dumps(summary) + " ")  # new mtime and size
    shutil.rmtree(tmp_path / "runs" / "sr-0.5_seed-0")
    assert [r["best.top1"] for r in load_runs(tmp_path)] == [0.75]


def test_a_changed_study_refuses_the_old_folder(tmp_path, capsys):
    path = write_study(tmp_path, space={"model.options.sr": [0.25]})
    out = tmp_path / "st"
    assert main(["sweep", str(path), "-o", str(out), "--dry-run"]) == 0
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    prepare_folder(load_study(path), out)
    path2 = write_study(tmp_path, space={"model.options.sr": [0.5]})
    cli_one_line_error(capsys, ["sweep", str(path2), "-o", str(out)], "holds another study")


def test_corrected_published_numbers_reach_the_folder_of_the_same_study(tmp_path):
    """Published numbers are not part of the study's identity: fixing them in the file and sweeping
    again updates study.json (which the report reads) instead of refusing the folder."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    out = tmp_path / "st"
    prepare_folder(load_study(write_study(tmp_path)), out)
    pub = {"dataset": "imagenet", "rows": [{"match": {"model.options.sr": 0.25}, "top5": 80.3}]}
    prepare_folder(load_study(write_study(tmp_path, published=pub)), out)
    assert json.loads((out / "study.json").read_text())["published"] == pub


def test_claims_give_each_point_to_exactly_one_of_racing_processes(tmp_path):
    """Four processes INSERT-claim the same 30 keys at once; then two race to take over one key."""
    import sqlalchemy as sa

    from squeezelab.experiments.claims import Claims

    url = f"sqlite:///{tmp_path / 'c.db'}"
    Claims(sa.create_engine(url), "s")  # the table exists before the race
    keys = [f"k{i}" for i in range(30)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    from tests.claims_race import race

    procs = [ctx.Process(target=race, args=(url, "s", keys, w, queue)) for w in range(4)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert sorted(k for w in won for k in w) == sorted(keys)  # every key once, none twice
    claims = Claims(sa.create_engine(url), "s")
    holder = claims.holders()["k0"]
    assert claims.claim("k0", 1, holder) and not claims.claim("k0", 2, holder)  # compare-and-swap
    assert claims.holders()["k0"] == 1


# ------------------------------------------------------------------------------------ report


def fake_run(root: Path, sr: float, seed: int, top1: list[float], status: str = "finished",
             name: str | None = None, **over) -> Path:
    """An ordinary run folder as the engine writes it (config, environment, metrics, summary)."""
    from squeezelab import runtime
    from squeezelab.config import dump_config, load_config

    run = root / "runs" / (name or f"sr-{sr}_seed-{seed}")
    run.mkdir(parents=True)
    cfg = load_config(SMOKE, {**FAST, "model.options.sr": sr, "train.seed": seed, **over})
    runtime.atomic_write_text(run / "config.yaml", dump_config(cfg))
    runtime.atomic_write_json(run / "environment.json", {})
    rows = [{"epoch": i + 1, "top1": t, "top5": min(1.0, t + 0.2), "train_loss": 1.0, "val_loss": 1.0, "lr": 0.1}
            for i, t in enumerate(top1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = max(rows, key=lambda r: r["top1"])
    runtime.atomic_write_json(run / "summary.json", {"status": status, "best": {
        "metric": "top1", "value": best["top1"], "top5": best["top5"], "epoch": best["epoch"]}, "error": None})
    return run


def test_report_tables_statistics_published_column_and_html(tmp_path):
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    pub = {"dataset": "imagenet", "source": "test numbers", "rows": [
        {"match": {"model.options.sr": 0.25}, "top1": 57.5, "top5": 80.3}]}
    path = write_study(tmp_path, seeds={"values": [0, 1, 2]}, published=pub)
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed, (a, b) in enumerate([(0.50, 0.60), (0.52, 0.65), (0.49, 0.61)]):
        fake_run(out, 0.25, seed, [0.3, a])
        fake_run(out, 1.0, seed, [0.4, b])
    fake_run(out, 1.0, 9, [0.1], status="failed")
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| sr=0.25 | " in md and "| 3/3 |" in md and "| 3/4 |" in md  # the failed run is counted as such
    assert "50.33 ± " in md  # mean of 0.50, 0.52, 0.49
    assert "| 57.5 | 80.3 |" in md and "different dataset" in md
    # the failed seed 9 is left out, so seeds 0-2 ran both variants: paired
    from scipy import stats as sp

    t = sp.ttest_rel([0.60, 0.65, 0.61], [0.50, 0.52, 0.49]).statistic
    assert f"| sr=1.0 | sr=0.25 | paired t | 3 | +11.67 | {t:.3g} |" in md
    assert "did not finish" in md and "sr-1.0_seed-9" in md
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page and "src=\"http" not in page
    for png in ("accuracy_vs_size.png", "learning_curves.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_published_points_given_as_top5_and_size_only(tmp_path):
    """The paper states Fig. 3's points in its text as top-5 and model size only: the missing top-1
    shows as "-", the size gets its own column, and the study's metric_note reaches the notes."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    pub = {"dataset": "imagenet", "source": "paper text", "metric_note": "Theirs are at full width.",
           "rows": [{"match": {"model.options.sr": 1.0}, "top5": 86.0, "size_mb": 19}]}
    path = write_study(tmp_path, seeds={"values": [0, 1]}, published=pub)
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed in (0, 1):
        fake_run(out, 0.25, seed, [0.5])
        fake_run(out, 1.0, seed, [0.6])
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| published MB |" in md
    row = next(line for line in md.splitlines() if line.startswith("| sr=1.0 |"))
    assert row.endswith("| - | 86.0 | 19 |")
    assert next(line for line in md.splitlines() if line.startswith("| sr=0.25 |")).endswith("| - | - | - |")
    assert "Theirs are at full width." in md


def test_report_names_each_run_by_the_variant_its_config_holds(tmp_path):
    """Named variants are told apart by the run folders' configs, the most specific first (a
    baseline without overrides would match every run)."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    variants = {"baseline": {}, "slow_lr": {"optim.lr": 1.0e-4}, "no_fire9": {"model.options.num_fire": 1}}
    pub = {"dataset": "digits", "rows": [{"match": {"variant": "baseline"}, "top1": 99.0, "top5": 100.0}]}
    path = write_study(tmp_path, variants=variants, space={}, seeds={"values": [0, 1]}, published=pub)
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed in (0, 1):
        fake_run(out, 0.125, seed, [0.5 + seed / 10], name=f"baseline_seed-{seed}")
        fake_run(out, 0.125, seed, [0.2 + seed / 10], name=f"slow_lr_seed-{seed}", **{"optim.lr": 1.0e-4})
        fake_run(out, 0.125, seed, [0.3], name=f"no_fire9_seed-{seed}", **{"model.options.num_fire": 1})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| baseline", "| slow_lr", "| no_fire9"))]
    # in the study file's order (write_study's YAML sorts the names)
    assert [r.split(" | ")[0] for r in rows][:3] == ["| baseline", "| no_fire9", "| slow_lr"]
    assert "55.00 ± " in rows[0] and "| 99.0 | 100.0 |" in rows[0] and "| - | - |" in rows[2]
    assert "30.00 ± 0.00" in rows[1] and "25.00 ± " in rows[2]
    assert "different dataset" not in md  # the published numbers are on digits too


def test_variants_that_replace_a_whole_section_are_told_apart(tmp_path):
    """squeezenet_vs_alexnet's variants set model.options as a whole; the run folders hold the
    flattened keys, which must still name each run's variant (they were all one variant before)."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    variants = {"small": {"model.options": {"num_fire": 1, "sr": 0.25}},
                "wide": {"model.options": {"num_fire": 2, "sr": 1.0}}}
    path = write_study(tmp_path, variants=variants, space={}, seeds={"values": [0]})
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    fake_run(out, 0.25, 0, [0.4], name="small_seed-0", **{"model.options.num_fire": 1})
    fake_run(out, 1.0, 0, [0.6], name="wide_seed-0", **{"model.options.num_fire": 2})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| small | " in md and "| wide | " in md and "| None |" not in md


def test_the_report_scores_the_kept_weights_on_test_when_validation_chose_them(tmp_path):
    """summary.json's selection (train.select on a validation split) -> test.top1 in the store, and a
    variant's values are those test scores when the study's runs all have one."""
    from squeezelab.experiments.report import Variant
    from squeezelab.experiments.store import read_run

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("train: {seed: 3}\n")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "top1": 0.5, "top5": 0.9}\n')
    (run / "summary.json").write_text(json.dumps({
        "status": "finished", "best": {"value": 0.5, "top5": 0.9, "epoch": 1},
        "selection": {"selected_on": "val (validation)", "test": {"split": "test", "top1": 0.42, "top5": 0.8}}}))
    rec = read_run(run, "r")
    assert rec["test.top1"] == 0.42 and rec["best.top1"] == 0.5 and rec["selected_on"].startswith("val")
    v = Variant({}, [{**rec, "seed": 3}])
    assert v.values("top1") == {3: 0.5}
    v.score = "test"
    assert v.values("top1") == {3: 0.42}


def test_fixed_threads_times_workers_above_the_cores_is_warned(tmp_path):
    """2 workers x 2 threads on 2 cores ran 2.3x slower than 2 x 1 (results/sweep_workers.md)."""
    from squeezelab import runtime
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import SweepOptions, _warn_oversubscribed

    study = load_study(write_study(tmp_path))
    cores, lines = runtime.available_cores(), []
    _warn_oversubscribed(study, SweepOptions(out=tmp_path, extra={"train.threads": cores}), 2, lines.append)
    assert len(lines) == 1 and f"2 workers x train.threads={cores}" in lines[0]
    lines.clear()
    _warn_oversubscribed(study, SweepOptions(out=tmp_path, extra={}), 2, lines.append)  # digits_smoke: 1 thread
    _warn_oversubscribed(study, SweepOptions(out=tmp_path, extra={"train.threads": None}), 2, lines.append)
    assert lines == [] or cores < 2


def test_report_judges_each_claim_and_flags_unconverged_variants(tmp_path):
    """Claim vs ours: A - B with the paired interval, the MDE and the verdict; a variant whose
    validation top-1 still climbed over the last quarter is flagged, and so are its claims; the wall
    time of the sweep sits beside the dry-run estimate."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    pub = {"dataset": "imagenet", "source": "test numbers", "rows": [], "claims": [
        {"claim": "sr 1.0 beats sr 0.25", "source": "paper", "a": {"model.options.sr": 1.0},
         "b": {"model.options.sr": 0.25}, "published": 2.0},
        {"claim": "sr 0.5 beats sr 0.25", "a": {"model.options.sr": 0.5}, "b": {"model.options.sr": 0.25},
         "kind": "higher"}]}
    path = write_study(tmp_path, seeds={"values": [0, 1, 2, 3, 4]}, published=pub)
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed, (a, b) in enumerate([(0.50, 0.56), (0.52, 0.57), (0.49, 0.56), (0.51, 0.55), (0.50, 0.57)]):
        fake_run(out, 0.25, seed, [0.3, 0.45, a - 0.001, a])  # flat over the last quarter
        fake_run(out, 1.0, seed, [0.3, 0.40, b - 0.05, b])    # still gaining 5 points
    (out / "sweeps.jsonl").write_text(json.dumps({"wall_s": 600.0, "workers": 2}) + "\n")
    (out / "estimate.json").write_text(json.dumps({"seconds": 540.0, "workers": 2, "threads": 1, "per_run": {}}))
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    claims = md[md.index("## Claim vs ours"):md.index("## Variants")]
    diff = [b - a for a, b in [(0.50, 0.56), (0.52, 0.57), (0.49, 0.56), (0.51, 0.55), (0.50, 0.57)]]
    from scipy import stats as sp

    lo, hi = sp.t.interval(0.95, 4, loc=sum(diff) / 5, scale=sp.sem(diff))
    assert f"+{100 * sum(diff) / 5:.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" in claims
    assert "| reproduced (not converged: sr=1.0) |" in claims
    assert "sr 0.5 beats sr 0.25" in claims and "not run at this scale" in claims
    assert "NOT CONVERGED" in md and "| NO (0/5 runs < 1 point) |" in md and "| yes (5/5 runs < 1 point) |" in md
    assert "Wall time: 10.0 min over 1 sweep invocation(s) with 2 worker(s); `sweep --dry-run` estimated 9.0 min" in md


def test_the_report_reads_claims_from_the_study_file_as_it_is_now(tmp_path):
    """Published numbers and claims do not change what runs: an edit of the study file reaches the
    report without a new sweep."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    path = write_study(tmp_path, seeds={"values": [0, 1]})
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed in (0, 1):
        fake_run(out, 0.25, seed, [0.3, 0.5 + seed / 100])
        fake_run(out, 1.0, seed, [0.3, 0.6 + seed / 50])
    raw = yaml.safe_load(path.read_text())
    raw["published"] = {"dataset": "imagenet", "rows": [], "claims": [
        {"claim": "wider squeeze is better", "a": {"model.options.sr": 1.0}, "b": {"model.options.sr": 0.25},
         "kind": "higher"}]}
    path.write_text(yaml.safe_dump(raw))
    assert main(["report", str(out)]) == 0
    assert "wider squeeze is better" in (out / "report.md").read_text()


def test_runs_and_sweep_trials_write_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_study(tmp_path, space={"model.options.sr": [0.25]}, scales={"smoke": {"set": {**FAST, "train.epochs": 2}}})
    out = tmp_path / "st"
    assert main(["sweep", str(path), "-o", str(out), "--set", "train.threads=1"]) == 0
    run = out / "runs" / "sr-0.25_seed-0"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    assert {"loss/train", "loss/val", "accuracy/top1", "accuracy/top5", "lr", "speed/images_per_second"} <= set(ea.Tags()["scalars"])
    assert [(e.step, round(e.value, 5)) for e in ea.Scalars("accuracy/top1")] == \
        [(m["epoch"], round(m["top1"], 5)) for m in metrics]
    hp = EventAccumulator(str(run / "tensorboard" / "hparams"))
    hp.Reload()
    assert "hparam/val_top1" in hp.Tags()["scalars"]
    assert "_hparams_/experiment" in hp.PluginTagToContent("hparams")  # what the HParams tab reads


def test_dry_run_estimates_the_wall_time_and_keeps_it_for_the_report(tmp_path, capsys):
    path = write_study(tmp_path, seeds={"values": [0, 1]})
    assert main(["sweep", str(path), "--dry-run", "--workers", "2", "-o", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "estimated wall time on this machine:" in out and "with 2 worker(s)" in out
    est = json.loads((tmp_path / "st" / "estimate.json").read_text())
    assert est["seconds"] > 0 and len(est["per_run"]) == 4 and est["workers"] == 2
    assert not (tmp_path / "st" / "runs").exists()


def test_a_trial_the_environment_failed_is_retried_by_the_next_sweep(tmp_path, capsys, monkeypatch):
    """Disk full (exit 1, squeezelab's one line) is not the trial's fault: the same command again runs
    it; within one command it is not retried (a full disk would loop)."""
    import squeezelab.experiments.sweep as sw

    path = write_study(tmp_path, space={"model.options.sr": [0.25]})
    out = tmp_path / "st"
    real = sw.run_trial
    calls = []

    def full_disk(cfg, out_, name):
        calls.append(name)
        return {"run": f"runs/{name}", "status": "failed", "best": {}, "error": "squeezelab train: error: "
                "runs/x/last.safetensors: No space left on device (free space on that disk)",
                "log": "x.log", "environment": True}

    monkeypatch.setattr(sw, "run_trial", full_disk)
    monkeypatch.delenv(sw.SWEEP_ID, raising=False)
    assert main(["sweep", str(path), "-o", str(out)]) == 1
    assert calls == ["sr-0.25_seed-0"] and "the next run of this sweep retries it" in capsys.readouterr().out
    monkeypatch.setattr(sw, "run_trial", real)
    assert main(["sweep", str(path), "-o", str(out)]) == 0  # a new command: the point runs now
    log = capsys.readouterr().out
    assert "sr-0.25_seed-0: top1" in log and "1 complete" in log


@pytest.mark.parametrize("over, words", [
    ({"name": "../../x"}, "name: expected"),
    ({"name": "a/b"}, "name: expected"),
    ({"space": {f"model.options.{k}": list(range(10)) for k in ("sr", "pct_3x3", "base_e", "incr_e", "freq",
                                                               "num_fire", "dropout", "leaky_slope", "conv1_kernel")}},
     "1,000,000,000 runs"),
    ({"sampler": "random", "n_trials": 10**9, "space": {"model.options.sr": {"low": 0.1, "high": 1.0}}}, "runs"),
    ({"scales": {"smoke": {"set": {**FAST, "train.epochs": 0}}}}, "train.epochs is 0"),
])
def test_a_study_that_cannot_run_is_refused_up_front(tmp_path, capsys, over, words):
    import time

    path = write_study(tmp_path, **over)
    t = time.perf_counter()
    cli_one_line_error(capsys, ["sweep", str(path), "--dry-run"], words)
    assert time.perf_counter() - t < 30  # sized, not materialised
    assert not (tmp_path / "studies").exists() and not (tmp_path.parent / "x").exists()


def test_names_from_files_cannot_inject_markup_or_break_the_plots(tmp_path):
    """A variant named with HTML and matplotlib mathtext ($\\frac{ unclosed): report.md shows it as text,
    index.html escapes it, and both PNGs are drawn."""
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import prepare_folder

    hostile = "<img src=x onerror=alert(1)>$\\frac{$"
    path = write_study(tmp_path, seeds={"values": [0, 1]}, space={}, variants={hostile: {"model.options.sr": 0.5}})
    out = tmp_path / "st"
    prepare_folder(load_study(path), out)
    for seed in (0, 1):
        fake_run(out, 0.5, seed, [0.3, 0.5 + seed / 100])
    assert main(["report", str(out)]) == 0
    md, page = (out / "report.md").read_text(), (out / "index.html").read_text()
    assert "<img src=x" not in md and "&lt;img src=x" in md and "<img src=x" not in page
    for png in ("accuracy_vs_size.png", "learning_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_worker_that_loses_the_schema_creation_race_retries(monkeypatch):
    """Two workers on a fresh PostgreSQL database both CREATE Optuna's schema; the loser's unique
    violation is retried (the schema then exists), anything else and a persistent failure are raised."""
    import sqlalchemy as sa

    from squeezelab.experiments import sweep

    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    calls = []

    def lost_once():
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key"))
        return "storage"

    assert sweep._with_schema_retry(lost_once) == "storage" and len(calls) == 2

    def always():
        raise sa.exc.ProgrammingError("CREATE TABLE studies", {}, Exception("already exists"))

    with pytest.raises(sa.exc.ProgrammingError):
        sweep._with_schema_retry(always, attempts=3)
    with pytest.raises(ValueError):
        sweep._with_schema_retry(lambda: (_ for _ in ()).throw(ValueError("other")))
