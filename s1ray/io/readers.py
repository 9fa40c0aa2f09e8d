"""Read question sources into canonical records; unusable rows go to quarantine.

A source is one file (JSONL, JSON, Parquet, CSV), a saved Hugging Face dataset folder, or a
hub id. Each row is mapped by a preset (the schema of a known dataset) plus per-source
column overrides. A row that cannot be used is never dropped silently: it is quarantined
with its file, row number and reason. A file that cannot be read at all raises
:class:`SourceError` naming it; a path that is not a regular file (a FIFO, a device, a symlink
loop) is refused before it is opened. Parsing is strict, so nothing is coerced silently: a JSON
object with a key twice, a CSV record with a stray quote, invalid UTF-8 and text nested too deeply
to parse are quarantined rows with their reason, never a whole run lost.
"""

from __future__ import annotations

import bz2
import csv
import errno
import gzip
import io
import json
import os
import re
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Iterator, Literal

from pydantic import AfterValidator

from s1ray.config import StrictModel
from s1ray.io.presets import PRESETS, RowError, check_template

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
    columns: dict[str, str | list[str]] = {}  # canonical field -> source column(s), overrides the preset
    # Record mapping (s1ray/io/presets.py): the question assembled from several columns, e.g.
    # "{passage}\n\n{question}"; how a multiple-choice answer is given (auto: a letter, a 0-based
    # index or an option's text; index1: 1-based).
    question_template: Annotated[str | None, AfterValidator(check_template)] = None
    answer_format: Literal["auto", "letter", "index", "index1", "text"] = "auto"
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
    """One quarantine line; ``raw`` is shown as far as it can be (lone surrogates escaped)."""
    try:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except RecursionError:
        text = "<nested too deeply to show>"
    except ValueError:
        text = repr(raw)[:_RAW_PREVIEW]
    text = text[:_RAW_PREVIEW].encode("utf-8", "backslashreplace").decode("utf-8")
    reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"source": source, "file": file, "row": str(row), "reason": reason, "raw": text}


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
    suffixes = p.suffixes[-2:] if compression_of(p) else p.suffixes[-1:]
    inner = suffixes[0].lower() if suffixes else ""
    by_suffix = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    if inner not in by_suffix or (compression_of(p) and by_suffix[inner] == "parquet"):
        raise SourceError(f"source {spec.name!r}: cannot tell the format of {p}; set `format`")
    return by_suffix[inner]


# --- files as people have them: compression, byte-order marks, files that end early -------

_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_BOM = b"\xef\xbb\xbf"
SHARD_BYTES = 8 << 20  # plain JSONL files larger than this are read by several tasks (~8K rows of math text)
SHARD_ROWS = 16_384  # Parquet row groups are grouped into shards of about this many rows


def compression_of(path: str | Path) -> str | None:
    return _COMPRESSION.get(Path(path).suffix.lower())


class _ZstdRaw(io.RawIOBase):
    """pyarrow's zstd stream as a raw file, so it can be buffered and iterated by lines."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self._stream = pa.input_stream(str(path), compression="zstd")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        try:
            data = self._stream.read(len(b))
        except OSError as e:  # pyarrow: "Truncated compressed stream"
            if "runcated" in str(e):
                raise EOFError(str(e)) from e
            raise
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed for .gz/.bz2/.zst; a file cut short raises EOFError on read."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if kind == "zstd":
        return io.BufferedReader(_ZstdRaw(path))  # type: ignore[return-value]
    return open(path, "rb")


_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (zlib.error, gzip.BadGzipFile, OSError)


def _truncated(path: Path, last_good: int, unit: str, cause: BaseException) -> RowError:
    """The quarantine reason for a compressed file that ends early (see :func:`read_shard`)."""
    return RowError(f"truncated: {path} ends early after {unit} {last_good} ({cause}); "
                    f"the rows before it are kept")


# --- raw rows: (row number, dict) or (row number, RowError) -----------------------------

RawRow = tuple[int, "dict[str, Any] | RowError", Any]


@dataclass(frozen=True)
class Shard:
    """A piece of one source one task reads: a byte range of a plain JSONL file (lines whose
    first byte lies in [start, end)), a range of Parquet row groups, or the whole source.
    ``first_row`` is the row number of the shard's first row when it is known before reading
    (Parquet, whole files); byte-range shards learn theirs from the line counts before them."""

    index: int = 0
    start: int = 0
    end: int | None = None
    first_row: int | None = 0


def plan_shards(spec: SourceConfig, shard_bytes: int | None = None, shard_rows: int | None = None) -> list[Shard]:
    """How a source is split over read tasks; cheap (file size, Parquet footer)."""
    shard_bytes = shard_bytes or SHARD_BYTES
    shard_rows = shard_rows or SHARD_ROWS
    fmt = detect_format(spec)
    if fmt in ("hub", "hf_disk") or spec.limit is not None:
        return [Shard()]
    path = _existing(spec)
    if fmt == "jsonl" and not compression_of(path):
        size = path.stat().st_size
        starts = list(range(0, max(size, 1), shard_bytes))
        return [Shard(i, s, min(s + shard_bytes, size), 0 if i == 0 else None) for i, s in enumerate(starts)]
    if fmt == "parquet" and path.stat().st_size:
        meta = _parquet_file(path).metadata
        shards, first, group_start, rows = [], 0, 0, 0
        for g in range(meta.num_row_groups):
            rows += meta.row_group(g).num_rows
            if rows >= shard_rows or g == meta.num_row_groups - 1:
                shards.append(Shard(len(shards), group_start, g + 1, first))
                first, group_start, rows = first + rows, g + 1, 0
        return shards or [Shard()]
    return [Shard()]


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _refuse_utf16(path: Path, head: bytes) -> None:
    if head.startswith(_UTF16_BOMS):
        raise SourceError(f"{path}: the file is UTF-16 text; re-save it as UTF-8 "
                          "(e.g. iconv -f UTF-16 -t UTF-8)")


def _iter_jsonl(path: Path, start: int = 0, end: int | None = None,
                stats: dict[str, int] | None = None) -> Iterator[RawRow]:
    """Rows of a JSONL file (or of its byte range); line numbers count from the range start.
    ``stats["lines"]`` ends as the number of lines consumed, blank ones included."""
    stats = {} if stats is None else stats
    lineno = stats["lines"] = 0
    with open_binary(path) as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the line that began before ``start`` belongs to the previous shard
        pos = f.tell() if start > 0 else 0
        try:
            while end is None or pos < end:
                raw = f.readline()
                if not raw:
                    break
                pos += len(raw)
                lineno = stats["lines"] = lineno + 1
                if lineno == 1 and start == 0:
                    _refuse_utf16(path, raw)
                    if raw.startswith(_BOM):
                        raw = raw[len(_BOM):]
                if not raw.strip():
                    continue
                yield _parse_json_line(lineno, raw)
        except EOFError as e:
            yield lineno + 1, _truncated(path, lineno, "line", e), ""
        except _DECOMPRESS_ERRORS as e:
            raise SourceError(f"{path}: cannot decompress after line {lineno} ({type(e).__name__}: {e})") from e


class DuplicateKeyError(ValueError):
    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKeyError(k)
            seen.add(k)
    return obj


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses an object holding a key twice (json keeps the last silently)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def json_problem(e: BaseException) -> str:
    """The quarantine reason for a JSON text ``loads_strict`` refused."""
    if isinstance(e, json.JSONDecodeError):
        return f"bad JSON: {e.msg} at column {e.colno}"
    if isinstance(e, DuplicateKeyError):
        return f"bad JSON: {e} in one object (json would keep only the last value)"
    if isinstance(e, RecursionError):
        return "bad JSON: nested too deeply to parse"
    return f"bad JSON: {e}"  # e.g. an integer of more than 4300 digits


def _parse_json_line(lineno: int, raw: bytes) -> RawRow:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return lineno, RowError(f"invalid UTF-8 at byte {e.start}"), raw.decode("utf-8", "replace")
    try:
        obj = loads_strict(line)
    except (ValueError, RecursionError) as e:
        return lineno, RowError(json_problem(e)), line
    if not isinstance(obj, dict):
        return lineno, RowError(f"row is a JSON {type(obj).__name__}, not an object"), line
    return lineno, obj, obj


def _read_all(path: Path) -> bytes:
    try:
        with open_binary(path) as f:
            return f.read()
    except EOFError as e:
        raise SourceError(f"{path}: truncated: the compressed file ends early ({e}); a JSON document "
                          "cannot be read in part") from e
    except _DECOMPRESS_ERRORS as e:
        raise SourceError(f"{path}: cannot decompress ({type(e).__name__}: {e})") from e


class _MarkedDict(dict):
    """An object of a JSON document that held a key twice (``duplicate`` names it)."""

    duplicate: str | None = None


def _mark_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _MarkedDict(pairs)
    seen: set[str] = set()
    marked.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return marked


def _duplicate_in(value: Any) -> str | None:
    if isinstance(value, _MarkedDict):
        return value.duplicate
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        found = _duplicate_in(child)
        if found is not None:
            return found
    return None


def _iter_json(path: Path) -> Iterator[RawRow]:
    """Rows of a JSON document; a row holding a key twice is quarantined (not the document)."""
    raw = _read_all(path)
    _refuse_utf16(path, raw[:2])
    if not raw.strip():  # a compressed empty file: no rows, like an empty plain one
        return
    try:
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_mark_duplicates)
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: invalid UTF-8 at byte {e.start}; the whole file is unreadable") from e
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); for one object per "
                          "line use .jsonl") from e
    except (ValueError, RecursionError) as e:
        raise SourceError(f"{path}: {json_problem(e)}; the whole document is unreadable (for one object "
                          "per line use .jsonl)") from e
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise SourceError(f"{path}: expected a JSON list of rows, or an object holding exactly one list")
        data = lists[0]
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    for i, obj in enumerate(data):
        try:
            duplicate = _duplicate_in(obj) if isinstance(obj, dict) else None
        except RecursionError:
            yield i, RowError("nested too deeply to use"), ""
            continue
        if duplicate is not None:
            yield i, RowError(f"bad JSON: duplicate key {duplicate!r} in one object (json would keep only "
                              "the last value)"), obj
        elif isinstance(obj, dict):
            yield i, obj, obj
        else:
            yield i, RowError(f"row is a JSON {type(obj).__name__}, not an object"), obj


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SourceError(f"{path}: not a readable Parquet file ({e})") from e


def _iter_parquet(path: Path, start: int = 0, end: int | None = None) -> Iterator[RawRow]:
    pf = _parquet_file(path)
    groups = list(range(start, pf.metadata.num_row_groups if end is None else end))
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=4096, row_groups=groups):
            for obj in batch.to_pylist():
                yield i, obj, obj
                i += 1
    except OSError as e:  # a corrupt page in the middle of the file
        raise SourceError(f"{path}: cannot read Parquet after row {i} of this shard ({e})") from e


_CSV_FIELD_LIMIT = 1 << 30  # the csv module's default of 128 KiB aborted a whole file on one long cell
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


def _csv_lines(binary: BinaryIO, path: Path) -> Iterator[str]:
    """Lines decoded one by one, so invalid UTF-8 costs one record, not the file."""
    for i, raw in enumerate(binary):
        if i == 0:
            _refuse_utf16(path, raw)
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
        yield raw.decode("utf-8", "surrogateescape")


def _iter_csv(path: Path) -> Iterator[RawRow]:
    """Records of a CSV file, parsed strictly: a stray or unterminated quote makes the record it
    starts a quarantine row naming its lines, and reading goes on at the next line (a lenient
    parser merged the rows after it into one garbage question)."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        binary = open_binary(path)
    except OSError as e:
        raise SourceError(f"{path}: {e.strerror}") from e
    with binary:
        reader = csv.reader(_csv_lines(binary, path), strict=True)
        lineno = 0
        try:
            try:
                header = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise SourceError(f"{path}: the header line is not readable as CSV ({e})") from e
            if _ESCAPED.search("".join(header)):
                raise SourceError(f"{path}: invalid UTF-8 in the header line")
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    lineno = reader.line_num
                    where = f"line {start}" if lineno <= start else f"lines {start}-{lineno}"
                    yield start, RowError(f"malformed CSV at {where}: {e} (a stray or unterminated quote?)"), ""
                    continue
                lineno = reader.line_num
                if not cells:  # a blank line
                    continue
                if len(cells) > len(header):
                    yield lineno, RowError("more cells than header columns"), cells
                    continue
                obj = dict(zip(header, cells))
                bad = [k for k, v in obj.items() if _ESCAPED.search(v)]
                if bad:
                    raw = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for k, v in obj.items()}
                    yield lineno, RowError(f"invalid UTF-8 in column {bad[0]!r}"), raw
                    continue
                obj.update((k, None) for k in header[len(cells):])  # fewer cells: the rest are missing
                yield lineno, {k: _maybe_json(v) for k, v in obj.items()}, obj
        except EOFError as e:
            yield lineno + 1, _truncated(path, lineno, "line", e), ""
        except (zlib.error, gzip.BadGzipFile, OSError) as e:
            raise SourceError(f"{path}: cannot decompress after line {lineno} ({type(e).__name__}: {e})") from e


def _maybe_json(value: str | None) -> Any:
    """CSV cells are strings; lists and objects stored as JSON text are decoded."""
    if value and value[0] in "[{":
        try:
            return loads_strict(value)
        except (ValueError, RecursionError):
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


def check_regular(path: Path, name: str) -> None:
    """Refuse what is not a regular file before it is opened: a FIFO blocks the reader forever,
    a device never ends, a symlink loop cannot be opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"source {name!r}: file not found: {path}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SourceError(f"source {name!r}: {path} is a symlink loop") from None
        raise SourceError(f"source {name!r}: cannot open {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
        raise SourceError(f"source {name!r}: {path} is {kind}, not a regular file; only files and saved "
                          "Hugging Face dataset folders are read")


def _existing(spec: SourceConfig) -> Path:
    path = Path(spec.path or "")
    check_regular(path, spec.name)
    if not os.access(path, os.R_OK):
        raise SourceError(f"source {spec.name!r}: file not readable (permission denied): {path}")
    return path


def source_label(spec: SourceConfig) -> str:
    """The file (or hub id) named in quarantine rows and ``origin``."""
    return (spec.hub_id or spec.name) if detect_format(spec) == "hub" else str(Path(spec.path or ""))


def iter_raw_rows(spec: SourceConfig, shard: Shard | None = None,
                  stats: dict[str, int] | None = None) -> tuple[str, Iterator[RawRow]]:
    """(label used in quarantine rows, iterator of raw rows) for a source, or one shard of it;
    for JSONL, ``stats["lines"]`` counts the lines read (see :func:`_iter_jsonl`)."""
    fmt = detect_format(spec)
    shard = shard or Shard(end=None)
    if fmt == "hub":
        return source_label(spec), _iter_hf(_load_hub(spec))
    if fmt == "hf_disk":
        return source_label(spec), _iter_hf(_load_hf_disk(spec))
    path = _existing(spec)
    if path.stat().st_size == 0:  # an empty file has no rows (not a broken Parquet/JSON document)
        return str(path), iter(())
    if fmt == "jsonl":
        return str(path), _iter_jsonl(path, shard.start, shard.end, stats)
    if fmt == "parquet":
        return str(path), _iter_parquet(path, shard.start, shard.end)
    return str(path), {"json": _iter_json, "csv": _iter_csv}[fmt](path)


@dataclass
class ShardResult:
    """One shard read: records in row order, quarantine rows, rows seen, and lines consumed
    (so the next byte-range shard of the file can number its lines)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each record's row number within the shard
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # "row": row number within the shard
    n_rows: int = 0
    n_lines: int = 0


def read_shard(spec: SourceConfig, shard: Shard, row_offset: int = 0) -> ShardResult:
    """Parse and validate one shard into canonical records; unusable rows are quarantined.

    Row numbers are ``row_offset`` + the row number within the shard. A compressed file that
    ends early keeps the rows read before the cut and adds one quarantine row with reason
    ``truncated: <file> ends early after line N ...`` (counted as an input row: the line that
    was cut off). Any other failure is a :class:`SourceError` naming the file.
    """
    if spec.preset not in PRESETS:
        raise SourceError(f"source {spec.name!r}: unknown preset {spec.preset!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[spec.preset]
    stats: dict[str, int] = {}
    label, rows = iter_raw_rows(spec, shard, stats)
    result = ShardResult()
    rowno = 0
    try:
        for rowno, obj, raw in rows:
            if spec.limit is not None and result.n_rows >= spec.limit:
                break
            result.n_rows += 1
            n = row_offset + rowno
            if isinstance(obj, RowError):
                result.quarantined.append(quarantine_row(spec.name, label, n, str(obj), raw))
                continue
            try:
                result.records.append(preset(obj, spec, f"{label}:{n}"))
                result.rows.append(rowno)
            except RowError as e:
                result.quarantined.append(quarantine_row(spec.name, label, n, str(e), raw))
            except RecursionError:
                result.quarantined.append(quarantine_row(spec.name, label, n, "nested too deeply to use", ""))
            except Exception as e:  # noqa: BLE001 - one odd row is quarantined, never the run's end
                result.quarantined.append(quarantine_row(spec.name, label, n,
                                                         f"unusable row ({type(e).__name__}: {e})", raw))
    except SourceError:
        raise
    except Exception as e:  # never a raw traceback: name the file and where it stopped
        raise SourceError(f"source {spec.name!r}: cannot read {label} after row {row_offset + rowno} "
                          f"({type(e).__name__}: {e})") from e
    result.n_lines = stats.get("lines", rowno)
    return result


def truncation_warnings(quarantined: list[dict[str, Any]]) -> list[str]:
    """One warning line per file that ended early."""
    return [f"warning: source {q['source']!r}: {q['reason']}" for q in quarantined
            if q["reason"].startswith("truncated:")]


def read_source(spec: SourceConfig) -> ReadResult:
    """Read one source completely (shard after shard, in this process) into canonical records
    and quarantine rows."""
    result = ReadResult(source=spec.name)
    offset = 0
    for shard in plan_shards(spec):
        part = read_shard(spec, shard, offset if shard.first_row is None else shard.first_row)
        offset = (offset if shard.first_row is None else shard.first_row) + part.n_lines
        result.n_rows += part.n_rows
        result.records.extend(part.records)
        result.quarantined.extend(part.quarantined)
    for line in truncation_warnings(result.quarantined):
        warnings.warn(line, stacklevel=2)
    if result.n_rows == 0:
        warnings.warn(f"warning: source {spec.name!r}: {source_label(spec)} has no rows (an empty file?)",
                      stacklevel=2)
    return result
