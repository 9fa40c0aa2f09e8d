"""The filter step (thresholds -> keep/drop with a named reason) and the funnel report.

Scores are computed once by the stages; :func:`apply_filters` only reads them, so a new
threshold is a cheap re-selection. Every input row ends in exactly one bucket: quarantined
at read time, dropped by one stage for one reason, or kept. The report checks
input = kept + dropped + quarantined and stores the check.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from s1ray.curate.stages import STAGES

FILTER_COLUMNS = {
    "keep": "row survives every stage",
    "drop_stage": "first stage that drops the row ('' if kept): quality | dedup | decontam | ...",
    "drop_reason": "named reason, e.g. too_short, asy_diagram, exact_duplicate, contaminated:math500",
}
STAGE_ORDER = tuple(name for stage in STAGES for name in stage.drop_stages)  # the funnel's columns


def drop_reasons(batch: pa.Table, cfg: Any, stages: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(stage, reason) per row, '' when the row is kept; earlier stages win. Each enabled
    stage's verdict is asked in turn (``stages``: a prefix of the stage list, default all)."""
    n = batch.num_rows
    stage_of = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    for stage in STAGES if stages is None else stages:
        if not stage.enabled(cfg):
            continue
        for name, why in stage.drop(batch, stage.section(cfg)):
            m = (why != "") & (stage_of == "")
            stage_of[m] = name
            reason[m] = why[m]
    return stage_of, reason


def apply_filters(batch: pa.Table, cfg: Any) -> pa.Table:
    for col in FILTER_COLUMNS:
        if col in batch.column_names:
            batch = batch.drop_columns([col])
    stage, reason = drop_reasons(batch, cfg)
    batch = batch.append_column("keep", pa.array(stage == ""))
    batch = batch.append_column("drop_stage", pa.array(stage, pa.string()))
    return batch.append_column("drop_reason", pa.array(reason, pa.string()))


def build_report(pool: pa.Table, quarantine: list[dict[str, Any]], n_input: dict[str, int],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per stage, reason and source, with the accounting check."""
    sources = list(n_input)
    src = pool["source"].to_pylist()
    stage = pool["drop_stage"].to_pylist()
    reason = pool["drop_reason"].to_pylist()
    per_source: dict[str, dict[str, int]] = {s: defaultdict(int) for s in sources}
    by_reason: dict[str, Counter] = defaultdict(Counter)
    by_reason_source: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for s, st, r in zip(src, stage, reason):
        per_source.setdefault(s, defaultdict(int))
        per_source[s]["kept" if not st else st] += 1
        if st:
            by_reason[st][r] += 1
            by_reason_source[st][r][s] += 1
    q_by_source = Counter(q["source"] for q in quarantine)
    q_by_reason = Counter(q["reason"].split(":")[0] for q in quarantine)
    total_in = sum(n_input.values())
    kept = sum(1 for st in stage if not st)
    dropped = {st: sum(by_reason[st].values()) for st in STAGE_ORDER}
    n_quar = len(quarantine)
    rows = []
    for s in sources:
        d = per_source[s]
        row = {"source": s, "input": n_input[s], "quarantined": q_by_source.get(s, 0),
               **{st: d.get(st, 0) for st in STAGE_ORDER}, "kept": d.get("kept", 0)}
        row["balanced"] = row["input"] == row["quarantined"] + sum(row[st] for st in STAGE_ORDER) + row["kept"]
        rows.append(row)
    remaining = total_in - n_quar
    steps = [{"step": "input", "rows": total_in}, {"step": "read (after quarantine)", "rows": remaining}]
    for st in STAGE_ORDER:
        remaining -= dropped[st]
        steps.append({"step": st, "rows": remaining})
    balanced = total_in == kept + sum(dropped.values()) + n_quar and all(r["balanced"] for r in rows)
    return {
        "input": total_in,
        "quarantined": n_quar,
        "dropped": dropped,
        "kept": kept,
        "accounting": {"input": total_in, "kept_plus_dropped_plus_quarantined":
                       kept + sum(dropped.values()) + n_quar, "ok": bool(balanced)},
        "steps": steps,
        "reasons": {st: dict(by_reason[st].most_common()) for st in STAGE_ORDER},
        "reasons_by_source": {st: {r: dict(c) for r, c in by_reason_source[st].items()} for st in STAGE_ORDER},
        "quarantine_reasons": dict(q_by_reason.most_common()),
        "sources": rows,
        **(extra or {}),
    }


def report_markdown(report: dict[str, Any]) -> str:
    acc = report["accounting"]
    lines = ["# Curation funnel", "",
             f"Input {report['input']} = kept {report['kept']} + dropped "
             f"{sum(report['dropped'].values())} + quarantined {report['quarantined']}: "
             f"**{'balanced' if acc['ok'] else 'NOT BALANCED'}**", "",
             "| step | rows |", "|---|---:|"]
    lines += [f"| {s['step']} | {s['rows']} |" for s in report["steps"]]
    lines += ["", "## Per source", "",
              "| source | input | quarantined | " + " | ".join(STAGE_ORDER) + " | kept |",
              "|---|" + "---:|" * (len(STAGE_ORDER) + 3)]
    for r in report["sources"]:
        lines.append(f"| {r['source']} | {r['input']} | {r['quarantined']} | "
                     + " | ".join(str(r[st]) for st in STAGE_ORDER) + f" | {r['kept']} |")
    lines += ["", "## Drop reasons", "", "| stage | reason | rows | by source |", "|---|---|---:|---|"]
    for st in STAGE_ORDER:
        for why, c in report["reasons"][st].items():
            by_src = ", ".join(f"{s}: {n}" for s, n in report["reasons_by_source"][st][why].items())
            lines.append(f"| {st} | {why} | {c} | {by_src} |")
    if report["quarantine_reasons"]:
        lines += ["", "## Quarantine reasons", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {why} | {c} |" for why, c in report["quarantine_reasons"].items()]
    return "\n".join(lines) + "\n"


def plot_funnel(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(steps) + 1.2))
    labels = [s["step"] for s in steps][::-1]
    values = [s["rows"] for s in steps][::-1]
    ax.barh(labels, values, color="#4c72b0")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v}", va="center")
    ax.set_xlabel("rows remaining")
    ax.set_title("s1ray curation funnel")
    ax.set_xlim(0, max(values + [1]) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path, plot: bool = True) -> dict[str, str]:
    """funnel.json, funnel.md and (with ``plot``) funnel.png; returns their paths."""
    paths = {"report_json": out_dir / "funnel.json", "report_md": out_dir / "funnel.md"}
    paths["report_json"].write_text(json.dumps(report, indent=2, default=str))
    paths["report_md"].write_text(report_markdown(report))
    if plot:
        paths["funnel_png"] = out_dir / "funnel.png"
        plot_funnel(report, paths["funnel_png"])
    return {k: str(v) for k, v in paths.items()}
