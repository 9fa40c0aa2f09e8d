"""Small, dependable writers for the outputs people open: JSON Lines files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars/arrays
        return value.tolist()
    return str(value)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows as JSON Lines atomically (temp file + rename); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_default) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
