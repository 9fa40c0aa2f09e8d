"""``s1ray curate`` outputs as one unit: a second run on the folder fails at once naming the first,
a full disk while joining kept.jsonl changes nothing, a damaged cache part is recomputed, and
``s1ray select`` stages its outputs the same way."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from s1ray.curate.config import CurateConfig
from s1ray.curate.pipeline import run_curate
from s1ray.io import writers
from s1ray.io.outputs import LOCK_NAME, MANIFEST, STAGING, OutputError, OutputsBusyError, verify_outputs

REPO = Path(__file__).resolve().parents[2]


def _fixtures(d: Path) -> None:
    rows = [{"problem": f"Sam has {i + 2} apples in one box and {3 * i + 1} pears in another. How many, case {i}?",
             "solution": f"\\boxed{{{4 * i + 3}}}"} for i in range(40)]
    rows[5] = {"problem": "Too short?", "solution": "1"}
    (d / "math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _cfg(d: Path, **kw) -> CurateConfig:
    return CurateConfig.model_validate({"sources": [{"name": "math", "path": str(d / "math.jsonl"), "preset": "math"}],
                                        "output_dir": str(d / "out"), "batch_size": 16, "plot": False,
                                        "quality": {"min_words": 3}, **kw})


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "cache" not in p.parts}


def test_curate_outputs_one_writer_full_disk_and_damaged_cache(ray_local, tmp_path, monkeypatch, capsys):
    _fixtures(tmp_path)
    out = tmp_path / "out"
    first = run_curate(_cfg(tmp_path))
    assert verify_outputs(out) == [] and first["accounting"]["ok"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["run_id"] == first["run_id"] == json.loads((out / "funnel.json").read_text())["run_id"]
    assert manifest["files"]["scored_pool.parquet"]["rows"] == 40
    assert manifest["files"]["kept.jsonl"]["rows"] == first["kept"] and first["kept"] > 30
    first_pool = pq.read_table(out / "scored_pool.parquet")
    before = _snapshot(out)

    # 1. A second run while another process holds the folder: fails at once, naming the holder.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from s1ray.io.outputs import acquire_lock
        print(acquire_lock({str(out)!r}, "curate").run_id, flush=True)
        sys.stdin.read()
    """)], env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder_run = holder.stdout.readline().strip()
        with pytest.raises(OutputsBusyError) as e:
            run_curate(_cfg(tmp_path, quality={"min_words": 12}))
        assert f"pid {holder.pid}" in str(e.value) and holder_run in str(e.value) and str(out) in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    after = _snapshot(out)
    assert after.pop(LOCK_NAME) and after == before  # untouched; the dead holder's lock stays until the next run

    # 2. The disk fills up while kept.jsonl is joined: one message naming the file, nothing changed.
    real = writers._append

    def append_then_full(piece, dst):
        real(piece, dst)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers, "_append", append_then_full)
    with pytest.raises(OutputError) as e:
        run_curate(_cfg(tmp_path, quality={"min_words": 12}))  # the dead holder's lock is broken first
    monkeypatch.undo()
    assert "no space left on device" in str(e.value) and "kept.jsonl" in str(e.value)
    assert _snapshot(out) == before and verify_outputs(out) == []
    assert not (out / STAGING).exists() and not (out / LOCK_NAME).exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]

    # 3. A cache part cut short is recomputed, with a warning naming it, not a traceback.
    part = sorted(out.glob("cache/quality-*/data/part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-40])
    capsys.readouterr()
    again = run_curate(_cfg(tmp_path))
    printed = capsys.readouterr().out
    assert again["stages"]["quality"]["status"] == "computed" and again["stages"]["read"]["status"] == "reused"
    assert f"cached output {part.parent.parent} is damaged" in printed and part.name in printed
    assert pq.read_table(out / "scored_pool.parquet").equals(first_pool)
    assert verify_outputs(out) == [] and again["run_id"] != first["run_id"]


def test_select_outputs_are_staged_and_locked(tmp_path):
    import pandas as pd

    from s1ray.curate.selection import SelectConfig, run_select

    pool = pd.DataFrame({"question": [f"q{i}" for i in range(30)], "keep": [True] * 30,
                         "thinking_tokens": list(range(30)), "source_type": ["x"] * 30})
    pool.to_parquet(tmp_path / "pool.parquet")
    cfg = SelectConfig(input=str(tmp_path / "pool.parquet"), output_dir=str(tmp_path / "sel"), criterion="random",
                       size=10, formats=["parquet", "jsonl"], plot=True)
    first = run_select(cfg)
    out = tmp_path / "sel"
    assert verify_outputs(out) == [] and Path(first["paths"]["plot"]).parent == out
    assert json.loads((out / MANIFEST).read_text())["files"]["subset.parquet"]["rows"] == 10
    second = run_select(cfg.model_copy(update={"plot": False, "formats": ["parquet"]}))
    assert verify_outputs(out) == [] and set(second["paths"]) == {"parquet", "report_json", "report_md"}
    assert not (out / "subset.jsonl").exists() and not (out / "thinking_lengths.png").exists()
