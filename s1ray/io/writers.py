"""Dependable writers for the outputs people open: JSON Lines files, and pool-sized outputs
written in parallel by Ray Data tasks without passing through the driver (:func:`write_ordered`)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars/arrays
        return value.tolist()
    return str(value)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path, atomic: bool = True) -> int:
    """Write rows as JSON Lines atomically (temp file + rename); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp") if atomic else path
    n = 0
    encode = json.JSONEncoder(ensure_ascii=False, default=_default).encode  # one encoder: json.dumps
    with open(tmp, "w", encoding="utf-8") as f:                             # with options makes one per row
        for row in rows:
            f.write(encode(row) + "\n")
            n += 1
    if atomic:
        os.replace(tmp, path)
    return n


# --- pool-sized outputs, written by Ray Data tasks in read order ---------------------------

PART_ROWS = 65_536  # rows per written part (one Parquet file, and one JSONL piece for kept rows)


@dataclass
class Written:
    rows: int
    parts: int
    kept: int
    counts: pa.Table  # rows per (count_by columns), summed over parts
    resorted: bool = False  # the blocks came back interleaved and were sorted, then written again


def _part_name(first: int, ext: str) -> str:
    return f"part-{first:012d}.{ext}"  # zero-padded: file-name order is row_index order


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_block(batch: pa.Table, folder: str, kept_folder: str | None, count_by: list[str]) -> pa.Table:
    """One Ray Data task's share: its rows as a Parquet part (+ its kept rows as JSONL)."""
    import pyarrow.parquet as pq

    ri = batch["row_index"]
    if len(ri) > 1 and not pc.all(pc.greater_equal(ri.slice(1), ri.slice(0, len(ri) - 1))).as_py():
        batch = batch.sort_by("row_index")
        ri = batch["row_index"]
    first, last = pc.min(ri).as_py(), pc.max(ri).as_py()
    _atomic_write(Path(folder) / _part_name(first, "parquet"), lambda p: pq.write_table(batch, p))
    n_kept = 0
    if kept_folder is not None:
        kept = batch.filter(batch["keep"])
        n_kept = kept.num_rows
        if n_kept:
            _atomic_write(Path(kept_folder) / _part_name(first, "jsonl"),
                          lambda p: write_jsonl(kept.to_pylist(), p, atomic=False))
    if count_by:
        g = batch.group_by(count_by, use_threads=False).aggregate([("row_index", "count"), ("row_index", "min")])
        counts = pa.table({**{c: g[c] for c in count_by}, "rows": g["row_index_count"],
                           "first_row": g["row_index_min"]})
    else:
        counts = pa.table({"rows": [batch.num_rows]})
    k = counts.num_rows
    meta = {"part_first": [first] * k, "part_last": [last] * k, "part_rows": [batch.num_rows] * k,
            "part_kept": [n_kept] * k}
    for name, values in meta.items():
        counts = counts.append_column(name, pa.array(values, pa.int64()))
    return counts


def _append(piece: Path, dst: Any) -> None:
    """Append a file's bytes to an unbuffered file, copied by the kernel where it can."""
    with open(piece, "rb") as src:
        size, sent = os.fstat(src.fileno()).st_size, 0
        try:
            while sent < size:
                n = os.sendfile(dst.fileno(), src.fileno(), sent, size - sent)
                if n == 0:
                    break
                sent += n
        except (AttributeError, OSError):  # no sendfile between these files: copy the rest in user space
            pass
        src.seek(sent)
        shutil.copyfileobj(src, dst, 1 << 20)


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_ordered(ds: Any, folder: str | Path, *, batch_rows: int | None = None, kept_jsonl: str | Path | None = None,
                  count_by: tuple[str, ...] = ()) -> Written:
    """Write a Dataset with a ``row_index`` column as a folder of Parquet parts whose file-name
    order is ``row_index`` order (so ``pq.read_table(folder)`` / ``pd.read_parquet(folder)`` give
    read order), and optionally its ``keep`` rows as one JSON Lines file, in the same order.

    Each part is written by a Ray Data task; the driver gets only per-part counts (grouped by
    ``count_by``) and joins the JSONL pieces by copying bytes. The folder is written beside the
    target and swapped in at the end, replacing a file or folder of the same name.
    """
    import pyarrow.parquet as pq
    import ray

    batch_rows = batch_rows or PART_ROWS
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    kept_tmp = folder.with_name(f".{folder.name}.kept.tmp") if kept_jsonl is not None else None
    for attempt in range(2):
        for d in (tmp, kept_tmp):
            if d is not None:
                _clear(d)
                d.mkdir(parents=True)
        out = ds.map_batches(_write_block, fn_kwargs={"folder": str(tmp), "count_by": list(count_by),
                                                      "kept_folder": str(kept_tmp) if kept_tmp else None},
                             batch_format="pyarrow", batch_size=batch_rows)
        tables = [t for t in ray.get(out.to_arrow_refs()) if t.num_rows]
        meta = pa.concat_tables(tables) if tables else None
        parts = sorted({(r["part_first"], r["part_last"], r["part_rows"], r["part_kept"])
                        for r in (meta.select(["part_first", "part_last", "part_rows", "part_kept"]).to_pylist()
                                  if meta is not None else [])})
        if all(a[1] < b[0] for a, b in zip(parts, parts[1:])):
            break
        # Blocks came back interleaved (an operator that does not keep order): sort, write again.
        ds = ds.sort("row_index")
    else:  # pragma: no cover - a sorted dataset's blocks cannot interleave
        raise RuntimeError(f"{folder}: written parts overlap in row_index even after sorting")
    if not parts:  # an empty pool is still a readable (empty) table
        schema = ds.schema()
        schema = getattr(schema, "base_schema", None) or pa.schema([("row_index", pa.int64())])
        pq.write_table(schema.empty_table(), tmp / _part_name(0, "parquet"))
    _clear(folder)
    os.replace(tmp, folder)
    n_kept = sum(p[3] for p in parts)
    if kept_jsonl is not None:
        kept_jsonl = Path(kept_jsonl)

        def join(path: Path) -> None:
            with open(path, "wb", buffering=0) as dst:  # unbuffered: sendfile moves the file offset
                for p in parts:
                    if p[3]:
                        _append(kept_tmp / _part_name(p[0], "jsonl"), dst)

        _atomic_write(kept_jsonl, join)
        _clear(kept_tmp)
    if meta is not None and count_by:  # groups in order of their first row, as a read-order scan meets them
        g = meta.group_by(list(count_by), use_threads=False).aggregate([("rows", "sum"), ("first_row", "min")])
        counts = pa.table({**{c: g[c] for c in count_by}, "rows": g["rows_sum"], "first_row": g["first_row_min"]})
        counts = counts.sort_by("first_row").drop_columns(["first_row"])
    else:
        counts = pa.table({c: pa.array([], pa.string()) for c in count_by} | {"rows": pa.array([], pa.int64())})
    return Written(rows=sum(p[2] for p in parts), parts=len(parts), kept=n_kept, counts=counts,
                   resorted=attempt > 0)
