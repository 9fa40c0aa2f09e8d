"""Sources read as Ray tasks into a Ray Dataset of canonical records, in read order.

The driver only plans (file sizes, Parquet footers: :func:`s1ray.io.readers.plan_shards`)
and receives small per-shard metadata (rows seen, lines consumed, quarantine rows); parsing,
validation and the records themselves stay in the tasks and the object store. One map then
numbers the rows: ``row_index`` = records in earlier shards (sources in config order, shards
in file order) + position within the shard, so it is the same however the work was split, and
byte-range shards of a JSONL file get their file line numbers in ``origin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from s1ray.io.readers import Shard, SourceConfig, SourceError, plan_shards, read_shard, source_label, truncation_warnings
from s1ray.records import SCHEMA, to_table

_SHARD, _POS, _ROW = "_shard", "_pos", "_row"
_EMPTY = pa.table({})


@dataclass
class Ingested:
    dataset: Any  # ray.data.Dataset: SCHEMA columns + row_index, in read order
    quarantine: list[dict[str, Any]]  # in read order, row numbers relative to their file
    n_input: dict[str, int]  # rows seen per source (records + quarantined)
    n_records: int
    empty: list[str]  # sources with no rows at all (an empty file?): warned about, counted in the report


def _read_task(spec_json: str, shard: Shard, g: int) -> tuple[pa.Table, dict[str, Any]]:
    """One shard read; a failure comes back as ``{"error": message}``, so no task fails and Ray
    prints no traceback (for this task or for the others' unread results)."""
    spec = SourceConfig.model_validate_json(spec_json)
    try:
        res = read_shard(spec, shard, shard.first_row or 0)
        table = to_table(res.records)
    except SourceError as e:
        return _EMPTY, {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - named and raised by the driver
        return _EMPTY, {"error": f"source {spec.name!r}: reading {source_label(spec)} failed: "
                                 f"{type(e).__name__}: {e}"}
    n = table.num_rows
    table = table.append_column(_SHARD, pa.array(np.full(n, g, np.int32)))
    table = table.append_column(_POS, pa.array(np.arange(n, dtype=np.int64)))
    table = table.append_column(_ROW, pa.array(np.asarray(res.rows, np.int64)))
    return table, {"quarantined": res.quarantined, "n_rows": res.n_rows, "n_lines": res.n_lines, "n_records": n}


def _number_rows(batch: pa.Table, rec_offset: np.ndarray, line_offset: np.ndarray, labels: list[str]) -> pa.Table:
    """row_index from the shard offsets; origins of byte-range shards get file line numbers."""
    g = batch[_SHARD].to_numpy()
    row_index = rec_offset[g] + batch[_POS].to_numpy()
    fix = np.flatnonzero(line_offset[g] > 0)
    if len(fix):
        rows = batch[_ROW].to_numpy()
        origin = np.asarray(batch["origin"].to_numpy(zero_copy_only=False), dtype=object)
        origin[fix] = [f"{labels[g[i]]}:{line_offset[g[i]] + rows[i]}" for i in fix]
        batch = batch.set_column(batch.schema.get_field_index("origin"), "origin", pa.array(origin, pa.string()))
    batch = batch.drop_columns([_SHARD, _POS, _ROW])
    return batch.append_column("row_index", pa.array(row_index, pa.int64()))


def read_dataset(specs: list[SourceConfig], batch_size: int, log: Callable[[str], None] = print) -> Ingested:
    """All sources, every shard a Ray task (1 CPU each); errors are :class:`SourceError` naming the file."""
    import ray

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SourceError(f"source names must be unique, got {names}")
    plan = [(si, shard) for si, spec in enumerate(specs) for shard in plan_shards(spec)]
    task = ray.remote(num_returns=2, num_cpus=1)(_read_task)
    spec_json = [s.model_dump_json() for s in specs]
    refs = [task.remote(spec_json[si], shard, g) for g, (si, shard) in enumerate(plan)]
    metas = []
    for (si, _), (_, meta_ref) in zip(plan, refs):
        try:
            metas.append(ray.get(meta_ref))
        except ray.exceptions.RayError as e:  # the task itself died (out of memory, a lost node)
            raise SourceError(f"source {specs[si].name!r}: reading {source_label(specs[si])} failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    errors = [m["error"] for m in metas if "error" in m]
    if errors:
        more = f" (and {len(errors) - 1} more failed read(s))" if len(errors) > 1 else ""
        raise SourceError(errors[0] + more)
    n_shards = len(plan)
    rec_offset = np.zeros(n_shards, np.int64)
    line_offset = np.zeros(n_shards, np.int64)
    quarantine: list[dict[str, Any]] = []
    n_input = {name: 0 for name in names}
    lines_so_far = {si: 0 for si in range(len(specs))}
    total = 0
    for g, ((si, shard), meta) in enumerate(zip(plan, metas)):
        rec_offset[g] = total
        total += meta["n_records"]
        n_input[names[si]] += meta["n_rows"]
        if shard.first_row is None:  # a byte-range shard: its lines follow the earlier shards'
            line_offset[g] = lines_so_far[si]
            for q in meta["quarantined"]:
                q["row"] = str(int(q["row"]) + lines_so_far[si])
        lines_so_far[si] += meta["n_lines"]
        quarantine.extend(meta["quarantined"])
    for line in truncation_warnings(quarantine):
        log(f"[curate] {line}")
    empty = [name for name in names if n_input[name] == 0]
    labels = [source_label(specs[si]) for si, _ in plan]
    if refs:
        ds = ray.data.from_arrow_refs([r[0] for r in refs])
    else:
        ds = ray.data.from_arrow(to_table([]).append_column(_SHARD, pa.array([], pa.int32()))
                                 .append_column(_POS, pa.array([], pa.int64()))
                                 .append_column(_ROW, pa.array([], pa.int64())))
    ds = ds.map_batches(_number_rows, fn_kwargs={"rec_offset": rec_offset, "line_offset": line_offset,
                                                 "labels": labels},
                        batch_format="pyarrow", batch_size=batch_size)
    return Ingested(ds, quarantine, n_input, total, empty)


def _read_part(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def read_parts(folder: Path) -> Any:
    """A folder written by :func:`s1ray.io.writers.write_ordered` as a Dataset in file order
    (one read task per part, nothing pulled to the driver)."""
    import ray

    files = sorted(str(p) for p in Path(folder).glob("part-*.parquet"))
    if not files:
        return ray.data.from_arrow(SCHEMA.empty_table().append_column("row_index", pa.array([], pa.int64())))
    task = ray.remote(num_cpus=1)(_read_part)
    return ray.data.from_arrow_refs([task.remote(f) for f in files])
