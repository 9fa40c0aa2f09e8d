"""``s1ray curate``: read sources, score every row with the rule stages on Ray Data, filter, report.

The stages are the list :data:`STAGES`; each one only ADDS columns (scores/flags) to the
pool, and adding a stage is one line. After the stages, the filter step
(:func:`s1ray.curate.funnel.apply_filters`) turns scores into keep/drop decisions with a
named reason. Each stage's output is stored as Parquet under ``<output_dir>/cache`` keyed
by the config sections it depends on, the stages before it and the input files' content
fingerprints, so a re-run with the same config and inputs reuses it. The model scoring stage
also saves each finished block under ``<stage folder>/parts`` while it runs, so a re-run after
a crash scores only the rows not saved yet (:func:`run_resumable`).

Outputs in ``output_dir``: ``scored_pool.parquet`` (every read row, all columns below),
``kept.jsonl``, ``quarantine.jsonl``, ``funnel.json``, ``funnel.md``, ``funnel.png`` (unless ``plot: false``),
and ``manifest.json``. They are written as one unit by one run at a time
(:mod:`s1ray.io.outputs`): the run holds a lock on ``output_dir``, stages every output and swaps
them in together at the end. A cached stage output that cannot be read is recomputed.

Scored-pool columns: the canonical record (:data:`s1ray.records.SCHEMA`), ``row_index``
(read order: sources in config order, rows in file order), then one group per stage (see
:func:`pool_columns`): quality ``q_chars``, ``q_words``, ``has_*``, ``flag_*``; dedup
``dup_kind``, ``dup_of``, ``dup_similarity``; decontam ``contam_benchmarks``,
``contam_ngrams``, ``contam_exact``; filter ``keep``, ``drop_stage``, ``drop_reason``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s1ray.cluster import init_ray
from s1ray.curate import dedup, funnel
from s1ray.curate.config import CurateConfig
from s1ray.curate.stage import DROPPED_EARLIER, Stage
from s1ray.curate.stages import STAGES
from s1ray.io.checkpoint import BlockCheckpoint, config_key
from s1ray.io import ingest
from s1ray.io.outputs import output_lock, staged_outputs, write_text_durable
from s1ray.io.readers import SourceConfig, SourceError, check_regular
from s1ray.io.writers import write_jsonl, write_ordered
from s1ray.records import SCHEMA
from s1ray.storage import check_owned

CACHE_VERSION = "rules-v5"  # bump when a stage's scoring logic or its stored layout changes
OUTPUTS = ["scored_pool.parquet", "kept.jsonl", "quarantine.jsonl", "funnel.json", "funnel.md", "funnel.png"]


def pool_columns() -> dict[str, str]:
    """Documentation of every scored-pool column, in order."""
    cols = {name: f"canonical record ({SCHEMA.field(name).type})" for name in SCHEMA.names}
    cols["row_index"] = "position in read order (sources in config order, rows in file order)"
    for stage in STAGES:
        cols.update({k: f"{stage.name}: {v}" for k, v in stage.columns.items()})
    cols.update({k: f"filter: {v}" for k, v in funnel.FILTER_COLUMNS.items()})
    return cols


# --- fingerprints and cache keys ----------------------------------------------------------

def fingerprint(spec: SourceConfig) -> str:
    """Content hash of a source's file(s); hub sources are keyed by id/config/split."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    if spec.path:
        p = Path(spec.path)
        if not p.is_dir():
            check_regular(p, spec.name)  # a FIFO would block here, before the reader could refuse it
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            try:
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as e:
                raise SourceError(f"source {spec.name!r}: cannot read {f}: {e.strerror or e}") from e
    return h.hexdigest()[:16]


def _key(*parts: Any) -> str:
    return config_key(*parts)


def _section(cfg: CurateConfig, name: str) -> Any:
    value = getattr(cfg, name)
    if name == "eval_sets":
        return [(s.model_dump(mode="json"), fingerprint(s)) for s in value]
    return value.model_dump(mode="json")


# --- reading --------------------------------------------------------------------------------

def read_sources(cfg: CurateConfig, log: Callable[[str], None] = print) -> ingest.Ingested:
    """All sources read by Ray tasks, one per shard (large files are split): a Dataset in read
    order with ``row_index``; only counts and quarantine rows reach the driver."""
    return ingest.read_dataset(cfg.sources, cfg.batch_size, log)


def to_dataset(table: pa.Table, batch_size: int):
    import ray

    slices = [table.slice(i, batch_size) for i in range(0, max(table.num_rows, 1), batch_size)]
    return ray.data.from_arrow(slices)


# --- the cache: a stage output is reused only when every part it recorded is whole -----------

def _mark_done(done: Path, key: str, folders: list[str]) -> None:
    """``_SUCCESS`` (written durably, last) records every part file and its size."""
    parts = {str(p.relative_to(done)): p.stat().st_size
             for name in folders for p in sorted((done / name).rglob("*")) if p.is_file()}
    write_text_durable(done / "_SUCCESS", json.dumps({"key": key, "parts": parts}))


def cache_problem(done: Path, folders: list[str]) -> str | None:
    """Why a completed cache entry cannot be reused (None when it can): a part missing, of another
    size than recorded, or whose Parquet footer does not read (a truncated file)."""
    import pyarrow.parquet as pq

    try:
        marker = json.loads((done / "_SUCCESS").read_text())
        recorded = marker["parts"] if isinstance(marker, dict) else None
    except ValueError:
        recorded = None  # a marker of an older version: check the footers only
    except OSError as e:
        return f"{done / '_SUCCESS'}: {e.strerror or e}"
    found = {str(p.relative_to(done)): p for name in folders for p in (done / name).rglob("*") if p.is_file()}
    if recorded is not None:
        for name, size in recorded.items():
            if name not in found:
                return f"{done / name} is missing"
            if found[name].stat().st_size != size:
                return f"{done / name} has {found[name].stat().st_size} bytes, {size} were written"
    for name, p in found.items():
        if p.suffix == ".parquet":
            try:
                pq.read_metadata(p)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a cut file
                return f"{p} is not a readable Parquet file ({e})"
    return None


def _reusable(done: Path | None, folders: list[str], log: Callable[[str], None]) -> bool:
    if done is None or not (done / "_SUCCESS").exists():
        return False
    check_owned(done, "curate cache")  # its rows end up in training: only a cache this user owns is read
    problem = cache_problem(done, folders)
    if problem is None:
        return True
    log(f"[curate] warning: cached output {done} is damaged ({problem}); recomputing it")
    shutil.rmtree(done, ignore_errors=True)
    return False


# --- the rule stages ------------------------------------------------------------------------

def score_pool(ds, cfg: CurateConfig, cache_dir: Path | None = None, upstream: str = "",
               log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
    """Run every enabled stage; with ``cache_dir`` reuse or store each stage's output."""
    info: dict[str, Any] = {}
    key = upstream
    for k, stage in enumerate(STAGES):
        if not stage.enabled(cfg):
            info[stage.name] = {"status": "disabled"}
            continue
        key = _key(key, stage.name, CACHE_VERSION, [_section(cfg, s) for s in _depends_on(stage, k)])
        t0 = time.perf_counter()
        done = cache_dir / f"{stage.name}-{key}" if cache_dir else None
        if _reusable(done, ["data"], log):
            # One read task per part, in row order: the pool never passes through the driver.
            ds = ingest.read_parts(done / "data")
            info[stage.name] = {"status": "reused", "key": key, "seconds": 0.0}
            log(f"[curate] stage {stage.name}: reusing {done}")
            continue
        table, extra = run_resumable(stage, ds, cfg, done, log) if done and stage.resumable(cfg) else (None, {})
        if table is not None:  # saved block by block; now stored whole like any other stage
            ds = to_dataset(table, cfg.batch_size)
            write_ordered(ds, done / "data")  # replaces a copy half-written before a kill
            _mark_done(done, key, ["data"])
            shutil.rmtree(done / "parts", ignore_errors=True)  # its rows are in data/ now
        else:
            ds = run_stage(stage, ds, cfg)
            if done is not None:  # without a cache the lazy plan continues and Ray fuses the maps
                ds = ds.materialize()
                (done / "_SUCCESS").unlink(missing_ok=True)
                write_ordered(ds, done / "data")  # parts in row order, read back by ingest.read_parts
                _mark_done(done, key, ["data"])
        info[stage.name] = {"status": "computed", "key": key, "seconds": round(time.perf_counter() - t0, 2), **extra}
        log(f"[curate] stage {stage.name}: computed in {info[stage.name]['seconds']} s")
    return ds, info


def _depends_on(stage: Stage, k: int) -> list[str]:
    """Sections that key a stage's cache; a kept-rows-only stage also reads every earlier verdict."""
    earlier = [name for s in STAGES[:k] for name in (s.name, *s.depends_on)] if stage.kept_rows_only else []
    return list(dict.fromkeys(earlier + list(stage.depends_on)))


def _mark_dropped(batch: pa.Table, cfg: CurateConfig, upto: int) -> pa.Table:
    stage, _ = funnel.drop_reasons(batch, cfg, STAGES[:upto])
    return batch.append_column(DROPPED_EARLIER, pa.array(stage != "", pa.bool_()))


def run_stage(stage: Stage, ds, cfg: CurateConfig):
    """``stage.score`` on ``ds``; a kept-rows-only stage first sees which rows earlier stages drop."""
    if stage.kept_rows_only:
        from s1ray.curate.scoring import LIGHT_CPUS

        # A light task: at 1 CPU it would wait behind the model pools on a small machine.
        ds = ds.map_batches(_mark_dropped, fn_kwargs={"cfg": cfg, "upto": STAGES.index(stage)},
                            batch_format="pyarrow", batch_size=cfg.batch_size, num_cpus=LIGHT_CPUS)
    return stage.score(ds, cfg)


def run_resumable(stage: Stage, ds, cfg: CurateConfig, done: Path,
                  log: Callable[[str], None] = print) -> tuple[pa.Table | None, dict[str, Any]]:
    """Run a row-local stage on the rows not saved yet under ``done/parts``, saving each output
    block as it arrives; returns the whole stage output (saved + new rows, in ``row_index``
    order) and ``{"rows", "resumed_rows"}``. ``(None, {})`` for an empty pool (run it plainly).
    """
    table = dedup.collect(ds)  # pool-sized, like a reused stage output
    if table.num_rows == 0:
        return None, {}
    parts = BlockCheckpoint(done / "parts", ("row_index",), "parquet", warn=log)
    finished, keys = parts.load()
    pool_rows = table["row_index"]
    finished = [t.filter(pc.is_in(t["row_index"], value_set=pool_rows)) for t in finished]
    finished = [t for t in finished if t.num_rows]
    saved = pa.array(sorted(k[0] for k in keys), pa.int64())
    todo = table.filter(pc.invert(pc.is_in(pool_rows, value_set=saved)))
    n_done = table.num_rows - todo.num_rows
    if n_done:
        log(f"[curate] stage {stage.name}: resuming: {n_done} of {table.num_rows} rows already done, "
            f"{todo.num_rows} to go ({parts.folder})")
    new: list[pa.Table] = []
    if todo.num_rows:
        out = run_stage(stage, to_dataset(todo, cfg.batch_size), cfg)
        # No prefetch: with it, a finished block is handed over only once the next one is done.
        for block in out.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            if block.num_rows:
                parts.save(block)
                new.append(block)
    result = pa.concat_tables(finished + new, promote_options="default").sort_by("row_index")
    expected = table.sort_by("row_index")["row_index"]
    if result.num_rows != table.num_rows or not pc.all(pc.equal(result["row_index"], expected)).as_py():
        raise RuntimeError(f"stage {stage.name}: {result.num_rows} output rows for {table.num_rows} input rows "
                           f"(saved parts in {parts.folder}); delete that folder to recompute the stage")
    return result, {"rows": table.num_rows, "resumed_rows": n_done}


def filter_pool(ds, cfg: CurateConfig):
    """Apply thresholds (cheap, in parallel): the scored pool with the filter columns, still a Dataset."""
    return ds.map_batches(funnel.apply_filters, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                          batch_size=cfg.batch_size)


READ_VERSION = "shards-v1"  # bump when what the read step stores changes


def _cached_read(cfg: CurateConfig, cache_dir: Path, log: Callable[[str], None]):
    """(dataset, quarantine rows, rows per source, records, key, status, empty sources); the records
    are stored as Parquet parts written by Ray Data tasks and read back the same way."""
    # Without a cache, no content fingerprint: hashing a large pool is serial work on the driver.
    key = _key("read", CACHE_VERSION, READ_VERSION,
               [(s.model_dump(mode="json"), fingerprint(s) if cfg.cache else None) for s in cfg.sources])
    done = cache_dir / f"read-{key}"
    if cfg.cache and _reusable(done, ["records"], log):
        try:
            quarantine = [json.loads(line) for line in (done / "quarantine.jsonl").read_text().splitlines() if line]
            counts = json.loads((done / "counts.json").read_text())
            log(f"[curate] read: reusing {done}")
            return (ingest.read_parts(done / "records"), quarantine, counts["n_input"], counts["n_records"],
                    key, "reused", counts.get("empty", []))
        except (OSError, ValueError, KeyError) as e:
            log(f"[curate] warning: cached read {done} is damaged ({type(e).__name__}: {e}); reading again")
            shutil.rmtree(done, ignore_errors=True)
    got = read_sources(cfg, log)
    ds = got.dataset
    if cfg.cache:
        ds = ds.materialize()  # read once: the parts on disk and the stages both use these blocks
        shutil.rmtree(done, ignore_errors=True)
        done.mkdir(parents=True)
        write_ordered(ds, done / "records")
        write_jsonl(got.quarantine, done / "quarantine.jsonl")
        write_text_durable(done / "counts.json", json.dumps({"n_input": got.n_input, "n_records": got.n_records,
                                                             "empty": got.empty}))
        _mark_done(done, key, ["records"])
    return ds, got.quarantine, got.n_input, got.n_records, key, "computed", got.empty


def _report_pool(counts: pa.Table) -> pa.Table:
    """The columns the funnel report counts, one row per pool row, rebuilt from grouped counts."""
    rows = counts["rows"].to_numpy()
    return counts.drop_columns(["rows"]).take(pa.array(np.repeat(np.arange(len(rows)), rows)))


@contextmanager
def _data_context(cfg: CurateConfig):
    """Ray Data settings for a curate run, restored after it.

    ``preserve_order``: stage outputs keep block order, so the pool is written in read order
    without a sort. Per-operator resource reservations are turned off when only rule stages run:
    they ran the rule stages' map tasks about one at a time on a 2-CPU node (a one-map pipeline
    of 32 tasks took 1.5x as long as without them on 2 CPUs, 1.25x on 8); Ray Data's backpressure
    still bounds the object store. Runs with model stages keep them: their actor pools need the
    CPUs the reservations keep free of upstream tasks.
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled
    model_stages = any(stage.kept_rows_only and stage.enabled(cfg) for stage in STAGES)
    ctx.execution_options.preserve_order = True
    ctx.op_resource_reservation_enabled = saved[1] and model_stages
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled = saved


def run_curate(cfg: CurateConfig) -> dict[str, Any]:
    """Read, score, filter and report; returns a JSON-able summary. Holds the lock on
    ``output_dir`` for the whole run (a second run on it fails at once, naming this one)."""
    t0 = time.perf_counter()
    with output_lock(cfg.output_dir, "curate"):
        init_ray(cfg.ray)
        with _data_context(cfg):
            return _run_curate(cfg, t0)


def _run_curate(cfg: CurateConfig, t0: float) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    cache_dir = out / "cache"
    ds, quarantine, n_input, n_records, read_key, read_status, empty = _cached_read(cfg, cache_dir, print)
    print(f"[curate] read {sum(n_input.values())} rows from {len(n_input)} sources: "
          f"{n_records} records, {len(quarantine)} quarantined ({read_status})")
    for name in empty:
        print(f"[curate] warning: source {name!r} has no rows (an empty file?)")
    ds, stages = score_pool(ds, cfg, cache_dir if cfg.cache else None, upstream=read_key)
    ds = filter_pool(ds, cfg)

    # scored_pool.parquet is a folder of Parquet parts in read order (pq.read_table / pd.read_parquet
    # read it whole); the parts and kept.jsonl are written by Ray Data tasks, not by the driver.
    # Everything is staged and swapped in together by commit().
    with staged_outputs(out, "curate", OUTPUTS, cfg) as staged:
        written = write_ordered(ds, staged.path("scored_pool.parquet"), kept_jsonl=staged.path("kept.jsonl"),
                                count_by=("source", "drop_stage", "drop_reason"))
        write_jsonl(quarantine, staged.path("quarantine.jsonl"))
        pool = _report_pool(written.counts)
        report = funnel.build_report(pool, quarantine, n_input, extra={
            "stages": {"read": {"status": read_status, "key": read_key}, **stages},
            "columns": pool_columns(),
            "empty_sources": empty,
            "run_id": staged.run_id,
            "seconds": round(time.perf_counter() - t0, 2),
        })
        staged_report = funnel.write_report(report, staged.folder, plot=cfg.plot)
        staged.commit(rows={"scored_pool.parquet": written.rows, "kept.jsonl": written.kept,
                            "quarantine.jsonl": len(quarantine)},
                      extra={"accounting": report["accounting"]})
    paths = {"scored_pool": out / "scored_pool.parquet", "kept": out / "kept.jsonl",
             "quarantine": out / "quarantine.jsonl", "manifest": out / "manifest.json"}
    report_paths = {k: str(out / Path(v).name) for k, v in staged_report.items()}
    print(funnel.report_markdown(report))
    if not report["accounting"]["ok"]:
        raise RuntimeError(f"funnel accounting does not balance: {report['accounting']} (see {out / 'funnel.json'})")
    return {
        "input": report["input"], "kept": report["kept"], "quarantined": report["quarantined"],
        "dropped": report["dropped"], "reasons": report["reasons"], "accounting": report["accounting"],
        "stages": report["stages"], "seconds": report["seconds"], "run_id": staged.run_id,
        "empty_sources": empty,
        "paths": {**{k: str(v) for k, v in paths.items()}, **report_paths},
    }
