"""MLflow ingestion of one experiment's metric files into a SQLite store (docs/comparing_runs.md,
"MLflow").

The store is ``sqlite:///<exp_dir>/mlflow.db`` with artifacts under ``<exp_dir>/mlartifacts``.
Stages never talk to MLflow: they write metric files, and a single Snakemake rule calls
``ingest`` afterwards. Only that one process ever writes the store, which is how we avoid
SQLite's "database is locked" when many jobs run in parallel (docs/method.md, "Pitfalls").

Layout: one MLflow experiment per experiment name; one parent run per (method, target, seed)
with tags method/target/seed, the flattened config as params, the config itself as the artifact
``config.yaml``, the evaluation metrics as ``eval/{benchmark}/{metric}`` (step = round; the
metric ``eval/{benchmark}/k`` says which k mean@k and maj@k used) and the round metrics as
``train/{metric}`` (step = global step); one nested child run per round (tag round) holding that
round's metrics (step = global step) and the artifact ``samples/reflections.jsonl``: a few of
the round's rollouts with their reflections, token ids and log-probs left out.

Ingest is idempotent: each parent carries a hash of its input files, the config and the
samples. A parent whose hash matches is kept; otherwise it and its children are deleted and
written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import numbers
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

# Nothing here may touch the network: MLflow 3 would otherwise send usage telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from rosd.reporting.aggregate import (  # noqa: E402
    BASE_TARGET,
    IDENTITY,
    collect,
    format_mean_std,
    markdown_table,
    seed_stats,
)

log = logging.getLogger(__name__)

# Creating a store logs each schema step at INFO; that is noise in every pipeline log.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

_TRUNCATED = "...[truncated]"
PARENT_FILTER = "tags.level = 'seed'"  # parents carry level=seed, round children level=round
SAMPLE_ROWS = 8  # rollouts per round kept as an artifact: enough to read, small enough to store
# Token ids and log-probs make a sample unreadable and large; the text fields say the same.
SAMPLE_DROPPED_SUFFIXES = ("_ids", "_logps")


# A store another process holds locked (an `mlflow ui` mid-write, a second `rosd track`): SQLite
# waits BUSY_TIMEOUT_S on each try, and ingest or compare try again for LOCK_WAIT_S in all.
BUSY_TIMEOUT_S = 10
LOCK_WAIT_S = 120
SQLITE_HEADER = b"SQLite format 3\0"
MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}
REMEDY = "move it aside and rerun the track job: snakemake --cores all --forcerun track"


class StoreError(Exception):
    """The MLflow store cannot be used: not an MLflow store, or locked by another process."""


def tracking_uri(exp_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(exp_dir).resolve() / 'mlflow.db'}"


def _store_uri(exp_dir: str | os.PathLike) -> str:
    """`tracking_uri` with SQLite's wait for a lock bounded by BUSY_TIMEOUT_S."""
    return f"{tracking_uri(exp_dir)}?timeout={BUSY_TIMEOUT_S}"


def check_store(db: Path) -> None:
    """Refuse a file that is not an MLflow store before MLflow opens it: MLflow would fail with a
    long traceback on garbage, and write its schema into an empty or foreign SQLite file."""
    with open(db, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        raise StoreError(f"{db}: an empty file, not an MLflow store; {REMEDY}")
    if header != SQLITE_HEADER:
        raise StoreError(f"{db}: not an SQLite database, so not an MLflow store; {REMEDY}")
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as store:
            tables = {name for (name,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        if _locked(error):
            raise
        raise StoreError(f"{db}: an unreadable SQLite database ({error}); {REMEDY}") from None
    if not MLFLOW_TABLES <= tables:
        raise StoreError(f"{db}: an SQLite database without MLflow's tables, not an MLflow store; {REMEDY}")


def _locked(error: BaseException) -> bool:
    return "database is locked" in str(error)


def _holders(db: Path) -> list[str]:
    """Other processes (of this user: others' are not visible) that have the store open; none
    where there is no /proc to look in."""
    names = {f"{db.resolve()}{suffix}" for suffix in ("", "-journal", "-wal", "-shm")}
    found = []
    processes = Path("/proc").iterdir() if Path("/proc").is_dir() else []
    for proc in sorted(processes, key=lambda p: p.name):
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) in names for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"pid {proc.name} ({command[:80]})")
        except OSError:  # gone, or not ours
            continue
    return found


def _retrying_while_locked(exp_dir: str | os.PathLike, action):
    """``action()``, tried again while another process holds the store locked, for LOCK_WAIT_S in
    all; then a `StoreError` saying who has it open."""
    db = Path(exp_dir) / "mlflow.db"
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return action()
        except Exception as error:
            if not _locked(error):
                raise
            if time.monotonic() >= deadline:
                holders = ", ".join(_holders(db)) or "no process this user can see"
                raise StoreError(f"{db}: the MLflow store stayed locked for {LOCK_WAIT_S} s (open in {holders}): close what holds it and rerun") from None
            log.warning("%s is locked by another process; trying again", db)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: keys joined with ".", values stringified and cut to fit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
            continue
        text = str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - len(_TRUNCATED)] + _TRUNCATED
        flat[name] = text
    return flat


def _numeric(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and value == value  # NaN: a null in the metric file
    )


def reflection_sample(path: Path, rows: int = SAMPLE_ROWS) -> str | None:
    """The first ``rows`` rollouts of a round's reflections.jsonl as JSON lines, those in the
    loss (the ones with reflections) first, without token ids and log-probs; None if absent."""
    if not path.exists():
        return None
    in_loss, others = [], []
    with open(path) as f:  # streamed: a full-size round's file is large, the sample is not
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("in_loss"):
                in_loss.append(record)
            elif len(others) < rows:
                others.append(record)
            if len(in_loss) == rows:
                break
    return "".join(
        json.dumps({k: v for k, v in r.items() if not k.endswith(SAMPLE_DROPPED_SUFFIXES)}) + "\n"
        for r in (in_loss + others)[:rows]
    )


def _round_samples(exp: Path, method: str, target: str, seed: int) -> dict[int, str]:
    run_dir = exp / "runs" / method / target / f"seed{seed}"
    samples = {}
    for path in sorted(run_dir.glob("round*/reflections.jsonl")):
        sample = reflection_sample(path)
        if sample is not None:
            samples[int(path.parent.name.removeprefix("round"))] = sample
    return samples


def _input_hash(exp: Path, method: str, target: str, seed: int, config: dict, samples: dict[int, str]) -> str:
    """Hash of the run's raw input files (paths and bytes), config and artifact samples, stable
    across ingests."""
    digest = hashlib.sha256(json.dumps([config, samples], sort_keys=True).encode())
    run_dir = f"{method}/{target}/seed{seed}"
    rounds = (exp / "runs" / run_dir).glob("round*/metrics.json")
    evals = (exp / "eval" / run_dir).glob("round*/*.json*")  # summaries and per-sample records
    files = sorted([*rounds, *evals])
    for path in files:
        digest.update(str(path.relative_to(exp)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _delete_with_children(client: MlflowClient, experiment_id: str, run_id: str) -> None:
    for child in _search(client, experiment_id, f"tags.mlflow.parentRunId = '{run_id}'"):
        client.delete_run(child.info.run_id)
    client.delete_run(run_id)


def _log(
    client: MlflowClient, run_id: str, metrics: Sequence[Metric], params: Sequence[Param] = ()
) -> None:
    # log_batch caps how many entities one call may carry
    for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])


def _round_metrics(row: dict, prefix: str, timestamp: int) -> list[Metric]:
    step = int(row["step"])
    return [
        Metric(f"{prefix}{key}", float(value), timestamp, step)
        for key, value in row.items()
        if key not in IDENTITY and key != "step" and _numeric(value)
    ]


def _eval_metrics(evals: pd.DataFrame, timestamp: int) -> list[Metric]:
    return [
        Metric(f"eval/{row['benchmark']}/{key}", float(value), timestamp, int(row["round"]))
        for row in evals.to_dict("records")
        for key, value in row.items()
        if (key in ("k", "mean_at_k", "maj_at_k") or key.startswith("pass_at_")) and _numeric(value)
    ]


def _write_parent(
    client: MlflowClient,
    experiment_id: str,
    identity: tuple[str, str, int],
    config: dict,
    digest: str,
    rounds: pd.DataFrame,
    evals: pd.DataFrame,
    samples: dict[int, str],
) -> None:
    method, target, seed = identity
    tags = {"level": "seed", "method": method, "target": target, "seed": str(seed)}
    parent = client.create_run(experiment_id, tags=tags, run_name=f"{method}-{target}-seed{seed}")
    parent_id = parent.info.run_id
    now = int(time.time() * 1000)
    round_rows = rounds.to_dict("records")
    # the round metrics also go on the parent, so its charts show the whole training curve
    train_series = [m for row in round_rows for m in _round_metrics(row, "train/", now)]
    params_list = [Param(key, value) for key, value in flatten_params(config).items()]
    _log(client, parent_id, _eval_metrics(evals, now) + train_series, params_list)
    client.log_dict(parent_id, config, "config.yaml")  # the whole config, untruncated
    for row in round_rows:
        child_tags = {**tags, "level": "round", "round": str(row["round"])}
        child_tags["mlflow.parentRunId"] = parent_id  # what makes MLflow nest it
        child = client.create_run(experiment_id, tags=child_tags, run_name=f"round{row['round']}")
        _log(client, child.info.run_id, _round_metrics(row, "", now))
        if int(row["round"]) in samples:
            client.log_text(child.info.run_id, samples[int(row["round"])], "samples/reflections.jsonl")
        client.set_terminated(child.info.run_id)
    # The hash goes on last: a parent left half-written by a crash never matches, so the next
    # ingest replaces it.
    client.set_tag(parent_id, "input_hash", digest)
    client.set_terminated(parent_id)


def _experiment_id(client: MlflowClient, exp_dir: Path, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        artifacts = (exp_dir / "mlartifacts").resolve().as_uri()
        return client.create_experiment(experiment, artifact_location=artifacts)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def ingest(exp_dir: str, experiment: str, config: dict) -> int:
    """Write (or keep) one parent run per (method, target, seed); returns how many there are. A
    store another process holds locked is waited for (`LOCK_WAIT_S`): ingest is idempotent, so a
    try cut short by the lock is simply made again."""
    exp = Path(exp_dir)
    rounds, evals = collect(exp)
    if (exp / "mlflow.db").exists() and (exp / "mlflow.db").stat().st_size:
        _retrying_while_locked(exp, lambda: check_store(exp / "mlflow.db"))
    return _retrying_while_locked(exp, lambda: _ingest(exp, experiment, config, rounds, evals))


def _ingest(exp: Path, experiment: str, config: dict, rounds: pd.DataFrame, evals: pd.DataFrame) -> int:
    client = MlflowClient(tracking_uri=_store_uri(exp))
    experiment_id = _experiment_id(client, exp, experiment)
    keys = ["method", "target", "seed"]
    rounds_of = dict(iter(rounds.groupby(keys)))
    evals_of = dict(iter(evals.groupby(keys)))
    identities = sorted(rounds_of.keys() | evals_of.keys())
    for method, target, seed in identities:
        samples = _round_samples(exp, method, target, seed)
        digest = _input_hash(exp, method, target, seed, config, samples)
        existing = _search(
            client,
            experiment_id,
            f"{PARENT_FILTER} and tags.method = '{method}' and tags.target = '{target}' "
            f"and tags.seed = '{seed}'",
        )
        keep = next((run for run in existing if run.data.tags.get("input_hash") == digest), None)
        for run in existing:
            if run is not keep:
                _delete_with_children(client, experiment_id, run.info.run_id)
        if keep is None:
            identity = (method, target, seed)
            own_rounds = rounds_of.get(identity, rounds.iloc[:0])
            own_evals = evals_of.get(identity, evals.iloc[:0])
            _write_parent(client, experiment_id, identity, config, digest, own_rounds, own_evals, samples)
    return len(identities)


def compare_table(
    exp_dir: str,
    experiment: str,
    methods: Iterable[str] | None = None,
    targets: Iterable[str] | None = None,
    metric: str = "mean_at_k",
) -> pd.DataFrame:
    """``eval/*/{metric}`` of each parent run's last evaluated round, mean/std/count over seeds.

    Returns ``rosd.reporting.aggregate.seed_stats`` output: index (method, target), columns
    (benchmark label with (ID)/(OOD), stat). ``targets`` filters trained runs only; the base
    row (target "all") stays whenever "base" is among ``methods``.
    """
    runs = _retrying_while_locked(exp_dir, lambda: _parent_runs(exp_dir, experiment))
    long = _long_metric(runs, metric)
    if methods is not None:
        long = long[long["method"].isin(list(methods))]
    if targets is not None:
        long = long[long["target"].isin([*targets, BASE_TARGET])]
    return seed_stats(long, "value")


def _parent_runs(exp_dir: str, experiment: str) -> pd.DataFrame:
    """search_runs' frame of the experiment's parent runs, from a store `check_store` accepts."""
    check_store(Path(exp_dir) / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(_store_uri(exp_dir))
    try:  # mlflow.search_runs reads the global URI; put the caller's back afterwards
        return mlflow.search_runs(experiment_names=[experiment], filter_string=PARENT_FILTER)
    finally:
        mlflow.set_tracking_uri(previous)


def _long_metric(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """search_runs' wide frame as rows (method, target, seed, benchmark, value)."""
    prefix, suffix = "metrics.eval/", f"/{metric}"
    columns = [c for c in runs.columns if c.startswith(prefix) and c.endswith(suffix)]
    if not columns:
        return pd.DataFrame(columns=["method", "target", "seed", "benchmark", "value"])
    tags = {"tags.method": "method", "tags.target": "target", "tags.seed": "seed"}
    long = runs.melt(id_vars=list(tags), value_vars=columns, var_name="benchmark")
    long = long.rename(columns=tags)
    long["benchmark"] = long["benchmark"].str.slice(len(prefix), -len(suffix))
    return long.dropna(subset=["value"])


def format_markdown(df: pd.DataFrame) -> str:
    """A ``compare_table`` result as a pipe table of "mean ± std" cells."""
    return markdown_table(format_mean_std(df))
