"""Dependable writers for the outputs people open: JSON Lines files, and pool-sized outputs
written in parallel by Ray Data tasks without passing through the driver (:func:`write_ordered`)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from s1ray.io.outputs import OutputError, disk_errors, fsync_dir


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars/arrays
        return value.tolist()
    return str(value)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path, atomic: bool = True) -> int:
    """Write rows as JSON Lines; ``atomic``: a temp file of its own, fsynced, then renamed (a
    reader never sees half a file, and a disk-full error leaves no temp file); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp") if atomic else path
    n = 0
    encode = json.JSONEncoder(ensure_ascii=False, default=_default).encode  # one encoder: json.dumps
    try:                                                                    # with options makes one per row
        with disk_errors(path), open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(encode(row) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        if atomic:
            os.replace(tmp, path)
    finally:
        if atomic:
            tmp.unlink(missing_ok=True)
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
    """``write`` into a temp file of this process, fsync, rename; the temp file never stays."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with disk_errors(path):
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_block(batch: pa.Table, folder: str, kept_folder: str | None, count_by: list[str]) -> pa.Table:
    """One Ray Data task's share: its rows as a Parquet part (+ its kept rows as JSONL). A write
    that fails comes back as an ``error`` row (raised on the driver with the path), not as a
    task failure whose traceback Ray would print."""
    try:
        return _write_block_parts(batch, folder, kept_folder, count_by)
    except OutputError as e:
        return pa.table({"error": [str(e)]})
    except OSError as e:
        return pa.table({"error": [f"cannot write in {folder}: {type(e).__name__}: {e}"]})


def _write_block_parts(batch: pa.Table, folder: str, kept_folder: str | None, count_by: list[str]) -> pa.Table:
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


def _replace_folder(new: Path, folder: Path) -> None:
    """Put ``new`` at ``folder``: the old copy is moved aside first and deleted only after the
    new one is in place, so a failure never leaves neither."""
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    if os.path.lexists(folder):
        os.replace(folder, old)
    os.replace(new, folder)
    fsync_dir(folder.parent)
    _clear(old)


def write_ordered(ds: Any, folder: str | Path, *, batch_rows: int | None = None, kept_jsonl: str | Path | None = None,
                  count_by: tuple[str, ...] = ()) -> Written:
    """Write a Dataset with a ``row_index`` column as a folder of Parquet parts whose file-name
    order is ``row_index`` order (so ``pq.read_table(folder)`` / ``pd.read_parquet(folder)`` give
    read order), and optionally its ``keep`` rows as one JSON Lines file, in the same order.

    Each part is written by a Ray Data task; the driver gets only per-part counts (grouped by
    ``count_by``) and joins the JSONL pieces by copying bytes. The folder is written beside the
    target and swapped in at the end, replacing a file or folder of the same name; temporary
    files are removed whatever happens, and a full disk is an :class:`OutputError` naming the path.
    """
    batch_rows = batch_rows or PART_ROWS
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder.with_name(f".{folder.name}.{tag}.tmp")
    kept_tmp = folder.with_name(f".{folder.name}.kept.{tag}.tmp") if kept_jsonl is not None else None
    try:
        return _write_ordered(ds, folder, tmp, kept_tmp, batch_rows, kept_jsonl, count_by)
    finally:  # nothing temporary stays, whatever happened
        for d in (tmp, kept_tmp):
            if d is not None:
                _clear(d)


def _write_ordered(ds: Any, folder: Path, tmp: Path, kept_tmp: Path | None, batch_rows: int,
                   kept_jsonl: str | Path | None, count_by: tuple[str, ...]) -> Written:
    import pyarrow.parquet as pq
    import ray

    for attempt in range(2):
        for d in (tmp, kept_tmp):
            if d is not None:
                _clear(d)
                d.mkdir(parents=True)
        out = ds.map_batches(_write_block, fn_kwargs={"folder": str(tmp), "count_by": list(count_by),
                                                      "kept_folder": str(kept_tmp) if kept_tmp else None},
                             batch_format="pyarrow", batch_size=batch_rows)
        tables = [t for t in ray.get(out.to_arrow_refs()) if t.num_rows]
        errors = [e for t in tables if "error" in t.column_names for e in t["error"].to_pylist()]
        if errors:
            raise OutputError(errors[0] + (f" (and {len(errors) - 1} more part(s) failed)" if len(errors) > 1 else ""))
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
        _atomic_write(tmp / _part_name(0, "parquet"), lambda p: pq.write_table(schema.empty_table(), p))
    fsync_dir(tmp)
    n_kept = sum(p[3] for p in parts)
    if kept_jsonl is not None:
        kept_jsonl = Path(kept_jsonl)

        def join(path: Path) -> None:
            with open(path, "wb", buffering=0) as dst:  # unbuffered: sendfile moves the file offset
                for p in parts:
                    if p[3]:
                        _append(kept_tmp / _part_name(p[0], "jsonl"), dst)

        _atomic_write(kept_jsonl, join)  # before the folder swap: a full disk here changes nothing
    _replace_folder(tmp, folder)
    if meta is not None and count_by:  # groups in order of their first row, as a read-order scan meets them
        g = meta.group_by(list(count_by), use_threads=False).aggregate([("rows", "sum"), ("first_row", "min")])
        counts = pa.table({**{c: g[c] for c in count_by}, "rows": g["rows_sum"], "first_row": g["first_row_min"]})
        counts = counts.sort_by("first_row").drop_columns(["first_row"])
    else:
        counts = pa.table({c: pa.array([], pa.string()) for c in count_by} | {"rows": pa.array([], pa.int64())})
    return Written(rows=sum(p[2] for p in parts), parts=len(parts), kept=n_kept, counts=counts,
                   resorted=attempt > 0)
