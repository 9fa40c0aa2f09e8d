"""The smallest effective set: from a table of sweep trials, the smallest subset size (and its
criterion) whose score, averaged over seeds, is within epsilon of a reference score.

Pure pandas, so it is unit-tested on synthetic tables and re-run on any saved trial table.
Every trial appears in the output: failed and early-stopped trials are listed with their
status and never count as candidates, so a missing point is always explained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

FULL = "full"
# Trial states as the driver writes them into the table.
COMPLETED, STOPPED, FAILED = "completed", "stopped_early", "failed"
# Relative slack for float comparisons at the epsilon boundary ("exactly at" counts as within).
_BOUNDARY_SLACK = 1e-9

TRIAL_COLUMNS = ["trial_id", "criterion", "size", "seed", "n_rows", "status", "score", "stage", "error"]


def _size_key(row: pd.Series) -> float:
    """Numeric size for ordering: "full" sorts as the number of rows it actually had."""
    if row["size"] == FULL or str(row["size"]) == FULL:
        n = row.get("n_rows")
        return float(n) if n is not None and not pd.isna(n) else math.inf
    return float(row["size"])


def summarize_groups(trials: pd.DataFrame, metric_mode: Literal["max", "min"] = "max") -> pd.DataFrame:
    """One row per (criterion, size): mean/std of the score over completed seeds, and counts."""
    missing = [c for c in ("criterion", "size", "seed", "status", "score") if c not in trials.columns]
    if missing:
        raise ValueError(f"trial table lacks column(s) {missing}; has {list(trials.columns)}")
    t = trials.copy()
    if "n_rows" not in t.columns:
        t["n_rows"] = np.nan
    t["size"] = t["size"].map(lambda s: FULL if str(s) == FULL else int(s))
    t["size_key"] = t.apply(_size_key, axis=1)
    rows = []
    for (criterion, size), g in t.groupby(["criterion", "size"], sort=False, dropna=False):
        done = g[g["status"] == COMPLETED]
        scores = done["score"].astype(float).dropna()
        n_rows = g["n_rows"].dropna()
        rows.append({
            "criterion": criterion,
            "size": size,
            "size_key": float(g["size_key"].min()) if size == FULL else float(size),
            "n_rows": int(n_rows.max()) if len(n_rows) else None,
            "n_trials": len(g),
            "n_completed": int(len(scores)),
            "n_stopped": int((g["status"] == STOPPED).sum()),
            "n_failed": int((g["status"] == FAILED).sum()),
            "mean": float(scores.mean()) if len(scores) else math.nan,
            "std": float(scores.std(ddof=1)) if len(scores) > 1 else (0.0 if len(scores) else math.nan),
            "seeds": sorted(int(s) for s in g["seed"].dropna()),
        })
    groups = pd.DataFrame(rows)
    if groups.empty:
        return groups
    # Deterministic order: by size, then best score first, then criterion name.
    sign = -1.0 if metric_mode == "max" else 1.0
    groups["_order"] = groups["mean"].map(lambda m: sign * m if not math.isnan(m) else math.inf)
    groups = groups.sort_values(["size_key", "_order", "criterion"]).drop(columns="_order")
    return groups.reset_index(drop=True)


def _reference(groups: pd.DataFrame, reference: str, metric_mode: str) -> tuple[float, str, str | None, dict]:
    """The score to compare against, which reference was used, a note when it had to fall back."""
    scored = groups[groups["n_completed"] > 0]
    if scored.empty:
        raise ValueError("no completed trial in the table: nothing to compare against")
    best = scored.loc[scored["mean"].idxmax() if metric_mode == "max" else scored["mean"].idxmin()]
    best_info = {"criterion": best["criterion"], "size": best["size"], "mean": float(best["mean"])}
    if reference == "best":
        return float(best["mean"]), "best", None, best_info
    full = scored[scored["size"] == FULL]
    if full.empty:
        return (float(best["mean"]), "best",
                "no completed full-pool trial: fell back to the best (criterion, size) mean", best_info)
    # Every criterion at size "full" trains on the whole pool; pool their seeds.
    trials = [(m, n) for m, n in zip(full["mean"], full["n_completed"])]
    mean = sum(m * n for m, n in trials) / sum(n for _, n in trials)
    return float(mean), "full", None, {"criterion": "any", "size": FULL, "mean": float(mean)}


def threshold_for(ref: float, epsilon: float, epsilon_mode: str, metric_mode: str) -> float:
    """The worst score still counted as "within epsilon" of ``ref``."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if epsilon_mode == "absolute":
        delta = epsilon
    elif epsilon_mode == "relative":
        delta = abs(ref) * epsilon
    else:
        raise ValueError(f"epsilon_mode must be 'absolute' or 'relative', got {epsilon_mode!r}")
    return ref - delta if metric_mode == "max" else ref + delta


def is_within(score: float, threshold: float, metric_mode: str) -> bool:
    if math.isnan(score):
        return False
    slack = _BOUNDARY_SLACK * max(1.0, abs(threshold))
    return score >= threshold - slack if metric_mode == "max" else score <= threshold + slack


def smallest_effective_set(
    trials: pd.DataFrame,
    epsilon: float = 0.02,
    epsilon_mode: Literal["absolute", "relative"] = "absolute",
    reference: Literal["best", "full"] = "best",
    metric_mode: Literal["max", "min"] = "max",
) -> dict[str, Any]:
    """The smallest (size, criterion) whose mean score over seeds is within epsilon of the reference.

    Ties at the smallest size go to the better mean (then the criterion name); the others that
    also qualify at that size are listed. Only fully trained trials count as candidates.
    """
    groups = summarize_groups(trials, metric_mode)
    ref, ref_used, note, ref_info = _reference(groups, reference, metric_mode)
    thr = threshold_for(ref, epsilon, epsilon_mode, metric_mode)
    groups["within"] = [is_within(m, thr, metric_mode) for m in groups["mean"]]
    hits = groups[groups["within"]]
    winner = hits.iloc[0]  # groups are sorted by size, then score: never empty (the reference qualifies)
    same_size = hits[hits["size_key"] == winner["size_key"]]
    return {
        "smallest": {
            "criterion": winner["criterion"],
            "size": winner["size"],
            "n_rows": winner["n_rows"],
            "mean": float(winner["mean"]),
            "std": float(winner["std"]),
            "n_seeds": int(winner["n_completed"]),
        },
        "also_within_at_that_size": [c for c in same_size["criterion"] if c != winner["criterion"]],
        "reference": {"requested": reference, "used": ref_used, "score": ref, **ref_info},
        "note": note,
        "epsilon": epsilon,
        "epsilon_mode": epsilon_mode,
        "metric_mode": metric_mode,
        "threshold": thr,
        "n_trials": int(len(trials)),
        "n_failed": int((trials["status"] == FAILED).sum()),
        "n_stopped_early": int((trials["status"] == STOPPED).sum()),
        "groups": _records(groups),
        "trials": _records(trials),
    }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN -> None, numpy scalars -> Python."""
    out = []
    for row in df.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, (np.generic,)):
                v = v.item()
            if isinstance(v, float) and math.isnan(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_report(result: dict[str, Any]) -> str:
    """The groups table, the answer, and every failed or early-stopped trial."""
    s, r = result["smallest"], result["reference"]
    eps = (f"{result['epsilon']:g} absolute" if result["epsilon_mode"] == "absolute"
           else f"{result['epsilon']:.0%} relative")
    lines = [
        "# Smallest effective set",
        "",
        f"**{s['criterion']} @ {s['size']}** ({s['n_rows']} rows): mean score {_fmt(s['mean'])} "
        f"over {s['n_seeds']} seed(s), within {eps} of the {r['used']} reference "
        f"{_fmt(r['score'])} (threshold {_fmt(result['threshold'])}).",
    ]
    if result["also_within_at_that_size"]:
        lines.append(f"Also within at that size: {', '.join(result['also_within_at_that_size'])}.")
    if result["note"]:
        lines.append(f"Note: {result['note']}.")
    lines += ["", "| criterion | size | rows | seeds ok/total | mean | std | failed | stopped early | within ε |",
              "|---|---|---|---|---|---|---|---|---|"]
    for g in result["groups"]:
        lines.append(
            f"| {g['criterion']} | {g['size']} | {g['n_rows'] if g['n_rows'] is not None else '-'} | "
            f"{g['n_completed']}/{g['n_trials']} | {_fmt(g['mean'])} | {_fmt(g['std'])} | {g['n_failed']} | "
            f"{g['n_stopped']} | {'yes' if g['within'] else 'no'} |")
    bad = [t for t in result["trials"] if t.get("status") != COMPLETED]
    if bad:
        lines += ["", "## Trials without a final score", "",
                  "| trial | criterion | size | seed | status | last score | stage | error |", "|---|---|---|---|---|---|---|---|"]
        for t in bad:
            err = (t.get("error") or "").replace("\n", " ").replace("|", "/")[:160]
            lines.append(f"| {t.get('trial_id', '-')} | {t['criterion']} | {t['size']} | {t['seed']} | {t['status']} | "
                         f"{_fmt(t.get('score'))} | {t.get('stage', '-')} | {err or '-'} |")
    return "\n".join(lines) + "\n"


def plot_scores(result: dict[str, Any], path: str | Path, metric: str = "score") -> Path:
    """Score against subset size (log x), one line per criterion, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = pd.DataFrame(result["groups"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for criterion, g in groups.groupby("criterion", sort=True):
        g = g.sort_values("size_key")
        ok = g[g["n_completed"] > 0]
        line = ax.errorbar(ok["size_key"], ok["mean"], yerr=ok["std"].fillna(0), marker="o", capsize=3,
                           label=criterion)
        color = line.lines[0].get_color()
        for x in g[g["n_completed"] == 0]["size_key"]:  # no final score: shown on the axis, never dropped
            if math.isfinite(x):
                ax.plot([x], [0.03], marker="x", ms=9, color=color, transform=ax.get_xaxis_transform(),
                        clip_on=False)
    ax.axhline(result["reference"]["score"], color="gray", ls="--", lw=1,
               label=f"reference ({result['reference']['used']})")
    ax.axhline(result["threshold"], color="gray", ls=":", lw=1, label="reference - ε")
    s = result["smallest"]
    ax.scatter([s["n_rows"] if s["size"] == FULL else s["size"]], [s["mean"]], s=180, facecolors="none",
               edgecolors="black", zorder=5, label=f"smallest effective: {s['criterion']} @ {s['size']}")
    ax.set_xscale("log")
    ticks = groups.drop_duplicates("size_key").sort_values("size_key")
    ticks = ticks[ticks["size_key"].map(math.isfinite)]
    ax.set_xticks(list(ticks["size_key"]))
    ax.set_xticklabels([f"full ({int(k)})" if z == FULL else str(z) for z, k in zip(ticks["size"], ticks["size_key"])])
    ax.minorticks_off()
    ax.set_xlabel("subset size (questions; 'full' = whole pool)")
    ax.set_ylabel(metric)
    ax.set_title("Score vs subset size (mean ± std over seeds; × on the axis = no final score)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(result: dict[str, Any], out_dir: str | Path, metric: str = "score") -> dict[str, str]:
    """``smallest_effective_set.json``, ``.md`` and ``.png`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "smallest_effective_set.json", "markdown": out / "smallest_effective_set.md",
             "plot": out / "smallest_effective_set.png"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    paths["markdown"].write_text(markdown_report(result))
    plot_scores(result, paths["plot"], metric)
    return {k: str(v) for k, v in paths.items()}
