"""Resumable generation jobs: every finished block is saved as its own part file, so a job
that dies (SIGKILL, preemption, out of memory) loses only the blocks in flight.

A job keeps its parts in one folder named by a fingerprint of everything that changes its
outputs (:func:`config_key`), so parts of a different config are never read. Each part is
written to a hidden temporary file and renamed into place, so a reader sees whole parts or
nothing. On a re-run, :meth:`BlockCheckpoint.load` returns the finished parts and the set of
row keys they hold; the job runs only the other rows and saves each new block as it arrives.

Two formats: ``parquet`` for Arrow tables (typed columns, e.g. the curate scoring stage) and
``jsonl`` for lists of JSON-able row dicts (e.g. evaluation samples, which end up as JSONL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

Format = Literal["parquet", "jsonl"]
Block = pa.Table | list[dict[str, Any]]
_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl"}


def config_key(*parts: Any) -> str:
    """Short, stable fingerprint of JSON-able config parts (dict key order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars/arrays
        return value.tolist()
    return str(value)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as it reads back from a JSONL part: new and resumed rows then compare equal."""
    return json.loads(json.dumps(row, ensure_ascii=False, default=_json_default))


class BlockCheckpoint:
    """The finished blocks of one resumable job, one file per block under ``folder``.

    ``key_columns`` name the row key (e.g. ``("row_index",)``); a row's key is the tuple of
    those values. ``warn`` receives the message for a part that cannot be read (it is ignored
    and its rows are redone).
    """

    def __init__(self, folder: str | Path, key_columns: Sequence[str], fmt: Format,
                 warn: Callable[[str], None] | None = None):
        if fmt not in _SUFFIX:
            raise ValueError(f"checkpoint format must be one of {sorted(_SUFFIX)}, got {fmt!r}")
        if not key_columns:
            raise ValueError("checkpoint needs at least one key column")
        self.folder = Path(folder)
        self.key_columns = tuple(key_columns)
        self.fmt = fmt
        self.warn = warn or log.warning
        self._saved = 0

    # --- reading --------------------------------------------------------------------------

    def part_files(self) -> list[Path]:
        """Finished part files in write order (temporary files of unfinished writes excluded)."""
        if not self.folder.is_dir():
            return []
        suffix = _SUFFIX[self.fmt]
        return sorted(p for p in self.folder.iterdir()
                      if p.name.startswith("part-") and p.name.endswith(suffix) and p.is_file())

    def keys_of(self, block: Block) -> list[tuple]:
        """Row keys of a block, in row order."""
        if isinstance(block, pa.Table):
            missing = [c for c in self.key_columns if c not in block.column_names]
            if missing:
                raise KeyError(f"block has no key column(s) {missing}; columns: {block.column_names}")
            return list(zip(*(block[c].to_pylist() for c in self.key_columns)))
        keys = []
        for i, row in enumerate(block):
            missing = [c for c in self.key_columns if c not in row]
            if missing:
                raise KeyError(f"row {i} has no key field(s) {missing}; fields: {sorted(row)}")
            keys.append(tuple(row[c] for c in self.key_columns))
        return keys

    def _read(self, path: Path) -> Block:
        if self.fmt == "parquet":
            return pq.read_table(path)
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"line {lineno}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"line {lineno}: not a JSON object")
                rows.append(row)
        return rows

    def load(self) -> tuple[list[Block], set[tuple]]:
        """Finished blocks (unreadable parts skipped with a warning) and the keys they hold.

        A key found in an earlier part is dropped from later ones, so every key appears once.
        The folder is refused when another user could have written it (:func:`check_owned`).
        """
        from s1ray.storage import check_owned

        check_owned(self.folder, "saved parts")
        blocks: list[Block] = []
        done: set[tuple] = set()
        for path in self.part_files():
            try:
                block = self._read(path)
                keys = self.keys_of(block)
            except Exception as e:  # noqa: BLE001 - any unreadable part is redone, never fatal
                self.warn(f"checkpoint part {path} is unreadable and will be redone: {type(e).__name__}: {e}")
                continue
            fresh = [k not in done for k in keys]
            if not all(fresh):
                if isinstance(block, pa.Table):
                    block = block.filter(pa.array(fresh, pa.bool_()))
                else:
                    block = [r for r, f in zip(block, fresh) if f]
            done.update(keys)
            if len(block):
                blocks.append(block)
        return blocks, done

    # --- writing --------------------------------------------------------------------------

    def save(self, block: Block) -> Path | None:
        """Write one finished block atomically (temp file, fsync, rename); empty blocks are skipped."""
        if not len(block):
            return None
        self.keys_of(block)  # a block without its keys could never be skipped on resume
        self.folder.mkdir(parents=True, exist_ok=True)
        self._saved += 1
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{self._saved:06d}{_SUFFIX[self.fmt]}"
        final = self.folder / name
        tmp = self.folder / f".{name}.tmp"
        try:
            if self.fmt == "parquet":
                with open(tmp, "wb") as f:
                    pq.write_table(block, f)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    for row in block:
                        f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def remove(self) -> None:
        """Delete the parts folder (e.g. once the whole output is stored elsewhere)."""
        shutil.rmtree(self.folder, ignore_errors=True)
