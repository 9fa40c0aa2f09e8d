"""One Markdown report for a pipeline run: funnel, selection, training curve, evaluation, with plots."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def msc_names() -> dict[str, str]:
    """MSC top-level code -> title, from the package's msc.json (no model, no heavy import)."""
    text = resources.files("s1ray").joinpath("data/msc.json").read_text(encoding="utf-8")
    return {e["code"]: e["title"] for e in json.loads(text)}


def domain_label(code: Any) -> str:
    """``"90 Operations research, mathematical programming"`` for a code; other values as they are.

    Reports show names next to the codes: a bare "90" or "11" means nothing to most readers.
    """
    text = str(code)
    key = text.zfill(2) if text.isdigit() and len(text) < 2 else text
    name = msc_names().get(key)
    return f"{key} {name}" if name else text


def training_curve(tb_dir: str | Path, png: Path) -> dict[str, list[float]] | None:
    """Read ``train/loss`` (and lr) from TensorBoard event files and plot them; None if absent."""
    tb_dir = Path(tb_dir)
    if not tb_dir.exists():
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if "train/loss" not in tags:
        return None
    loss = acc.Scalars("train/loss")
    curve = {"step": [e.step for e in loss], "loss": [e.value for e in loss]}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["step"], curve["loss"], marker="o", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (trace + answer tokens)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return curve


def _rel(path: str | Path | None, base: Path) -> str | None:
    if not path:
        return None
    return os.path.relpath(path, base)


def _image(title: str, path: str | Path | None, base: Path) -> list[str]:
    if not path or not Path(path).exists():
        return []
    return [f"![{title}]({_rel(path, base)})", ""]


def _read(path: str | Path | None) -> str:
    """A stage's own Markdown report, its headings moved two levels down to nest in this one."""
    if not path or not Path(path).exists():
        return ""
    text = Path(path).read_text(encoding="utf-8")
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def _eval_rows(summary: dict[str, Any]) -> list[tuple[str, str, int, float, float]]:
    rows = []
    for bench, methods in summary.items():
        for method, m in methods.items():
            for b in m["budgets"]:
                rows.append((bench, method, b["budget"], b["accuracy"], b["avg_thinking_tokens"]))
    return rows


def write_pipeline_report(cfg: Any, results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``report.md`` (+ ``training_curve.png``) and a short text summary for the terminal."""
    lines = ["# s1ray pipeline report", "", f"Output folder: `{out}`", ""]
    summary_lines = ["", "s1ray pipeline finished", f"  output folder   {out}"]
    secs = results.get("seconds", {})
    lines += ["| stage | seconds |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in secs.items()] + [""]

    if "curate" in results:
        c = results["curate"]
        lines += ["## 1. Curation funnel", ""]
        lines += [_read(c["paths"].get("report_md")), ""]
        lines += _image("funnel", c["paths"].get("funnel_png"), out)
        dropped = c["dropped"]
        per_stage = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) if isinstance(dropped, dict) else ""
        total = sum(dropped.values()) if isinstance(dropped, dict) else dropped
        summary_lines.append(f"  curate          {c['input']} rows in -> {c['kept']} kept, {total} dropped"
                             f"{f' ({per_stage})' if per_stage else ''}, {c['quarantined']} quarantined")
    if "select" in results:
        s = results["select"]
        lines += ["## 2. Selection", "", f"Criterion `{cfg.select.criterion}`, seed {cfg.select.seed}: "
                  f"{s['size']} of {s['pool_size']} kept questions ({s['forced']} forced inclusions, "
                  f"{s['domains']} domains).", ""]
        lines += [_read(s["paths"].get("report_md")), ""]
        lines += _image("thinking lengths", s["paths"].get("plot"), out)
        summary_lines.append(f"  select          {s['size']} of {s['pool_size']} ({cfg.select.criterion})")
    if "train" in results:
        t = results["train"]
        lines += ["## 3. Training", "", f"Model `{cfg.train.model}` -> `{t['model_dir']}`", ""]
        data = t.get("data") or {}
        if data:
            lines += ["| data statistic | value |", "|---|---:|"]
            lines += [f"| {k} | {v} |" for k, v in data.items()] + [""]
        metrics = {k: v for k, v in (t.get("metrics") or {}).items() if isinstance(v, (int, float))}
        if metrics:
            lines += ["| final metric | value |", "|---|---:|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()] + [""]
        tb = Path(t.get("storage_path", "")) / t.get("run_name", "") / "tensorboard"
        curve_png = out / "training_curve.png"
        curve = training_curve(tb, curve_png)
        if curve:
            lines += _image("training curve", curve_png, out)
            summary_lines.append(f"  train           loss {curve['loss'][0]:.3f} -> {curve['loss'][-1]:.3f} "
                                 f"over {curve['step'][-1]} steps; model {t['model_dir']}")
        else:
            summary_lines.append(f"  train           model {t['model_dir']}")
    if "evaluate" in results:
        e = results["evaluate"]
        lines += ["## 4. Evaluation (budget forcing)", "", _read(e["paths"].get("summary_md")), ""]
        lines += _image("test-time scaling", e["paths"].get("plot"), out)
        summary_lines.append("  evaluate        benchmark / method / budget: accuracy (avg thinking tokens)")
        for bench, method, budget, acc, toks in _eval_rows(e["summary"]):
            summary_lines.append(f"                  {bench} / {method} / {budget}: {acc:.3f} ({toks:.0f})")
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    summary_lines += [f"  report          {md}", f"  summary (JSON)  {out / 'pipeline_summary.json'}"]
    return {"markdown": str(md), "summary_text": "\n".join(summary_lines)}

