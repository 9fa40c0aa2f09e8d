"""Read question sources into canonical records; unusable rows go to quarantine.

A source is one file (JSONL, JSON, Parquet, CSV), a saved Hugging Face dataset folder, or a
hub id. Each row is mapped by a preset (the schema of a known dataset) plus per-source
column overrides. A row that cannot be used is never dropped silently: it is quarantined
with its file, row number and reason. A file that cannot be read at all raises
:class:`SourceError` naming it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from s1ray.config import StrictModel
from s1ray.io.presets import PRESETS, RowError

Format = Literal["auto", "jsonl", "json", "parquet", "csv", "hf_disk", "hub"]
_RAW_PREVIEW = 2000


class SourceError(RuntimeError):
    """A source that cannot be read at all (missing file, unreadable format, hub offline)."""


class SourceConfig(StrictModel):
    """One input source and how its columns map onto the canonical record."""

    name: str
    path: str | None = None  # a file, or a folder written by ``Dataset.save_to_disk``
    hub_id: str | None = None  # e.g. simplescaling/s1K-1.1 (needs network)
    hub_config: str | None = None
    split: str = "train"
    format: Format = "auto"
    preset: str = "generic"  # one of s1ray.io.presets.PRESETS
    columns: dict[str, str] = {}  # canonical field -> source column, overrides the preset
    answer_from: Literal["field", "boxed", "gsm8k"] | None = None  # how to derive `answer`
    teacher: Literal["deepseek", "gemini"] = "deepseek"  # s1K-1.1: whose trace comes first
    limit: int | None = None  # read only the first N rows
    max_chars: int = 32_000  # longer questions are quarantined as absurd
    trust_remote_code: bool = False


@dataclass
class ReadResult:
    source: str
    n_rows: int = 0  # every row seen, usable or not
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)


def quarantine_row(source: str, file: str, row: int | str, reason: str, raw: Any) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    return {"source": source, "file": file, "row": str(row), "reason": reason, "raw": text[:_RAW_PREVIEW]}


def detect_format(spec: SourceConfig) -> str:
    if spec.format != "auto":
        return spec.format
    if spec.hub_id and not spec.path:
        return "hub"
    if not spec.path:
        raise SourceError(f"source {spec.name!r}: give `path` or `hub_id`")
    p = Path(spec.path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
            return "hf_disk"
        raise SourceError(f"source {spec.name!r}: {p} is a folder but not a saved Hugging Face dataset")
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    by_suffix = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                 ".csv": "csv", ".jsonl.gz": "jsonl"}
    if suffix not in by_suffix:
        raise SourceError(f"source {spec.name!r}: cannot tell the format of {p}; set `format`")
    return by_suffix[suffix]


# --- raw rows: (row number, dict) or (row number, RowError) -----------------------------

RawRow = tuple[int, "dict[str, Any] | RowError", Any]


def _iter_jsonl(path: Path) -> Iterator[RawRow]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, RowError(f"invalid UTF-8 at byte {e.start}"), raw.decode("utf-8", "replace")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, RowError(f"bad JSON: {e.msg} at column {e.colno}"), line
                continue
            if not isinstance(obj, dict):
                yield lineno, RowError(f"row is a JSON {type(obj).__name__}, not an object"), line
                continue
            yield lineno, obj, obj


def _iter_json(path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: invalid UTF-8 at byte {e.start}; the whole file is unreadable") from e
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); for one object per "
                          "line use .jsonl") from e
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise SourceError(f"{path}: expected a JSON list of rows, or an object holding exactly one list")
        data = lists[0]
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    for i, obj in enumerate(data):
        if isinstance(obj, dict):
            yield i, obj, obj
        else:
            yield i, RowError(f"row is a JSON {type(obj).__name__}, not an object"), obj


def _iter_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SourceError(f"{path}: not a readable Parquet file ({e})") from e
    i = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            yield i, obj, obj
            i += 1


def _iter_csv(path: Path) -> Iterator[RawRow]:
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise SourceError(f"{path}: {e.strerror}") from e
    with f:
        reader = csv.DictReader(f)
        try:
            for obj in reader:
                lineno = reader.line_num
                if None in obj:  # more cells than header columns
                    yield lineno, RowError("more cells than header columns"), obj
                    continue
                yield lineno, {k: _maybe_json(v) for k, v in obj.items()}, obj
        except UnicodeDecodeError as e:
            raise SourceError(f"{path}: invalid UTF-8 near line {reader.line_num + 1}") from e


def _maybe_json(value: str | None) -> Any:
    """CSV cells are strings; lists and objects stored as JSON text are decoded."""
    if value and value[0] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_hf(ds: Any) -> Iterator[RawRow]:
    for i, obj in enumerate(ds):
        yield i, obj, obj


def _load_hf_disk(spec: SourceConfig) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(spec.path)
    except Exception as e:
        raise SourceError(f"{spec.path}: not a readable saved Hugging Face dataset ({e})") from e
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise SourceError(f"{spec.path}: split {spec.split!r} not found; it has {list(ds)}")
        ds = ds[spec.split]
    return ds


def _load_hub(spec: SourceConfig) -> Any:
    import datasets

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        offline_hint = " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)"
    else:
        offline_hint = ""
    try:
        return datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split)
    except Exception as e:
        raise SourceError(
            f"source {spec.name!r}: cannot load {spec.hub_id!r} from the Hugging Face hub{offline_hint}. "
            "This machine may be offline: download the dataset where the hub is reachable "
            "(`datasets.load_dataset(...).save_to_disk(DIR)`) and set `path: DIR` instead. "
            f"Cause: {type(e).__name__}: {str(e)[:300]}"
        ) from e


def iter_raw_rows(spec: SourceConfig) -> tuple[str, Iterator[RawRow]]:
    """(label used in quarantine rows, iterator of raw rows) for a source."""
    fmt = detect_format(spec)
    if fmt == "hub":
        return spec.hub_id or spec.name, _iter_hf(_load_hub(spec))
    path = Path(spec.path or "")
    if fmt == "hf_disk":
        return str(path), _iter_hf(_load_hf_disk(spec))
    if not path.exists():
        raise SourceError(f"source {spec.name!r}: file not found: {path}")
    if not os.access(path, os.R_OK):
        raise SourceError(f"source {spec.name!r}: file not readable: {path}")
    iterators = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet, "csv": _iter_csv}
    return str(path), iterators[fmt](path)


def read_source(spec: SourceConfig) -> ReadResult:
    """Read one source completely into canonical records and quarantine rows."""
    if spec.preset not in PRESETS:
        raise SourceError(f"source {spec.name!r}: unknown preset {spec.preset!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[spec.preset]
    label, rows = iter_raw_rows(spec)
    result = ReadResult(source=spec.name)
    for rowno, obj, raw in rows:
        if spec.limit is not None and result.n_rows >= spec.limit:
            break
        result.n_rows += 1
        origin = f"{label}:{rowno}"
        if isinstance(obj, RowError):
            result.quarantined.append(quarantine_row(spec.name, label, rowno, str(obj), raw))
            continue
        try:
            result.records.append(preset(obj, spec, origin))
        except RowError as e:
            result.quarantined.append(quarantine_row(spec.name, label, rowno, str(e), raw))
    return result
