"""The results store: every run folder under a root (at any depth), indexed in SQLite.

The folders are the truth; the index (``<root>/.squeezelab-runs.sqlite``) is a cache of what they hold,
updated on every open: a folder whose files changed since it was indexed (mtime and size of
config.yaml, metrics.jsonl, summary.json) is read again, a folder that vanished is dropped. A root we
cannot write to is indexed in memory.

A run is a flat record: ``config.<dotted key>`` for every config value, ``status``, ``best.top1``,
``best.top5``, ``best.epoch``, ``final.<metric>`` (last epoch's row), ``epochs``, ``seconds``, and its
``curve`` (per-epoch rows) and ``path`` (relative to the root).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from squeezelab.config import load_yaml
from squeezelab.errors import ConfigError

INDEX = ".squeezelab-runs.sqlite"
FILES = ("config.yaml", "metrics.jsonl", "summary.json")
SCHEMA = "CREATE TABLE IF NOT EXISTS runs (path TEXT PRIMARY KEY, signature TEXT, record TEXT)"


def find_runs(root: Path) -> list[Path]:
    """Run folders (those holding a config.yaml and an environment.json) under root, sorted."""
    return sorted(p.parent for p in root.rglob("environment.json") if (p.parent / "config.yaml").is_file())


def _signature(run: Path) -> str:
    parts = []
    for name in FILES:
        try:
            st = (run / name).stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _open_index(root: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(root / INDEX, timeout=30)
        db.execute(SCHEMA)
        return db
    except sqlite3.OperationalError:  # read-only folder: index in memory
        db = sqlite3.connect(":memory:")
        db.execute(SCHEMA)
        return db


def load_runs(root: str | Path) -> list[dict]:
    """Every run under ``root`` as a flat record, the index brought up to date first."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"runs folder not found: {root}")
    db = _open_index(root)
    with db:
        known = {p: sig for p, sig in db.execute("SELECT path, signature FROM runs")}
        present = {str(r.relative_to(root)): r for r in find_runs(root)}
        for rel in set(known) - set(present):
            db.execute("DELETE FROM runs WHERE path = ?", (rel,))
        for rel, run in present.items():
            sig = _signature(run)
            if known.get(rel) != sig:
                db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", (rel, sig, json.dumps(read_run(run, rel))))
        records = [json.loads(r) for (r,) in db.execute("SELECT record FROM runs ORDER BY path")]
    db.close()
    return records


def read_run(run: Path, rel: str) -> dict:
    """One run folder -> its flat record (a run still training or killed has status "running / killed").
    A file that is not what it claims (not text, not JSON / YAML, not an object, not a regular file)
    makes the run "corrupt" with the reason, listed and left out of every statistic, never a crash."""
    problems: list[str] = []
    cfg = _yaml_object(run / "config.yaml", problems) or {}
    summary = _json_object(run / "summary.json", problems) or {}
    for key, kind in (("status", str), ("best", dict), ("selection", dict), ("error", str), ("seconds", (int, float))):
        if summary.get(key) is not None and not isinstance(summary[key], kind):
            problems.append(f"summary.json: {key} is a {type(summary[key]).__name__}")
    curve = _curve(run / "metrics.jsonl", problems)
    best = summary.get("best") if isinstance(summary.get("best"), dict) else {}
    final = curve[-1] if curve else {}
    status = summary.get("status") if isinstance(summary.get("status"), str) else "unfinished"
    rec = {"path": rel, "status": "corrupt" if problems else status,
           "error": "; ".join(problems) if problems else summary.get("error"),
           "epochs": len(curve), "seconds": summary.get("seconds"), "curve": curve,
           "best.top1": best.get("value"), "best.top5": best.get("top5"), "best.epoch": best.get("epoch")}
    rec.update({f"final.{k}": final.get(k) for k in ("top1", "top5", "val_loss", "train_loss")})
    selection = summary.get("selection") if isinstance(summary.get("selection"), dict) else {}
    test = selection.get("test") if isinstance(selection.get("test"), dict) else {}  # kept weights on test
    rec.update({"test.top1": test.get("top1"), "test.top5": test.get("top5"), "test.split": test.get("split"),
                "selected_on": selection.get("selected_on")})
    rec.update({f"config.{k}": v for k, v in flatten(cfg).items()})
    return rec


MAX_FILE = 64 << 20  # a run's text files are kilobytes; anything past this is not one


def _text(path: Path, problems: list[str]) -> str | None:
    """A run file's text; None when absent. Not a regular file (a FIFO would block), too large, or not
    UTF-8 -> a problem (runtime.read_regular's one line), and None."""
    from squeezelab.errors import DataError
    from squeezelab.runtime import read_regular

    if not path.exists():
        return None
    try:
        return read_regular(path, path.name, MAX_FILE).decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path.name} is not UTF-8 text")
    except DataError as err:
        problems.append(str(err).replace(f"{path}: ", f"{path.name}: "))
    return None


def _json_object(path: Path, problems: list[str]) -> dict | None:
    text = _text(path, problems)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        problems.append(f"{path.name} is not JSON")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} holds a {type(data).__name__}, not an object")
        return None
    return data


def _yaml_object(path: Path, problems: list[str]) -> dict | None:
    text = _text(path, problems)
    if text is None:
        return None
    try:
        data = load_yaml(text)
    except yaml.YAMLError:
        problems.append(f"{path.name} is not a YAML config")
        return None
    if data is not None and not isinstance(data, dict):
        problems.append(f"{path.name} holds a {type(data).__name__}, not a config")
        return None
    return data


def _curve(path: Path, problems: list[str]) -> list[dict]:
    """metrics.jsonl: one object per epoch with numeric scores, or a problem."""
    text = _text(path, problems)
    rows = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            problems.append(f"metrics.jsonl line {n} is not JSON")
            return []
        if not isinstance(row, dict) or not all(isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
                                                for k in ("epoch", "top1")):
            problems.append(f"metrics.jsonl line {n} is not an epoch's scores")
            return []
        rows.append(row)
    return rows


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------------------------- queries


def column(key: str) -> str:
    """A user's key -> a record's: ``model.options.sr`` means ``config.model.options.sr``; metrics
    (``best.top1``, ``status``, ...) are themselves."""
    return key if key in ("path", "status", "epochs", "seconds", "error") or "." in key and \
        key.split(".")[0] in ("best", "final", "config") else f"config.{key}"


def parse_where(items: list[str]) -> list[tuple[str, str, object]]:
    """``["model.options.sr=0.5", "best.top1>0.9"]`` -> [(column, op, value)]; ops = != > < >= <=."""
    out = []
    for item in items:
        for op in ("!=", ">=", "<=", "=", ">", "<"):
            key, sep, raw = item.partition(op)
            if sep and key:
                out.append((column(key.strip()), op, _where_value(item, op, raw)))
                break
        else:
            raise ConfigError(f"--where expects KEY=VALUE (or != > < >= <=), got {item!r}")
    return out


def _where_value(item: str, op: str, raw: str):
    """A --where value as YAML (0.5, true, simple); an order comparison needs a number."""
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if op not in ("=", "!=") and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        raise ConfigError(f"--where {item!r}: {op} compares with a number, got {raw!r}")
    if isinstance(value, (dict, list)):
        raise ConfigError(f"--where {item!r}: expected a single value, got {raw!r}")
    return value


def _test(value, op: str, want) -> bool:
    if op in ("=", "!="):
        same = value == want or str(value) == str(want)
        return same if op == "=" else not same
    if not isinstance(value, (int, float)) or not isinstance(want, (int, float)):
        return False
    return {">": value > want, "<": value < want, ">=": value >= want, "<=": value <= want}[op]


def select(records: list[dict], where: list[str] = (), sort: list[str] = ()) -> list[dict]:
    """Records matching every --where, sorted by --sort keys (``-key``: descending; missing last)."""
    conds = parse_where(list(where))
    known = set().union(*(r.keys() for r in records)) if records else set()
    for col, _, _ in conds:
        if records and col not in known:
            raise ConfigError(f"--where: no run has {col.removeprefix('config.')}")
    rows = [r for r in records if all(_test(r.get(c), op, v) for c, op, v in conds)]
    for key in reversed(list(sort)):
        desc, col = key.startswith("-"), column(key.lstrip("-"))
        if records and col not in known:
            raise ConfigError(f"--sort: no run has {col.removeprefix('config.')}")
        present = [r for r in rows if r.get(col) is not None]
        present.sort(key=lambda r: _sort_key(r[col]), reverse=desc)
        rows = present + [r for r in rows if r.get(col) is None]
    return rows


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def varying_keys(records: list[dict]) -> list[str]:
    """Config keys whose value differs between the records (what tells the runs apart)."""
    keys = sorted({k for r in records for k in r if k.startswith("config.")})
    skip = ("config.output.", "config.data.cache_dir")
    return [k for k in keys if not k.startswith(skip) and len({json.dumps(r.get(k)) for r in records}) > 1]


def find_one(records: list[dict], name: str) -> dict:
    """A run by its path, or a unique suffix of it (e.g. its folder name)."""
    exact = [r for r in records if r["path"] == name.rstrip("/")]
    hits = exact or [r for r in records if r["path"].endswith(name.rstrip("/"))]
    if len(hits) != 1:
        raise ConfigError(f"run {name!r}: {'no run' if not hits else f'{len(hits)} runs'} match "
                          f"(paths relative to the runs folder, e.g. {records[0]['path'] if records else '...'})")
    return hits[0]
