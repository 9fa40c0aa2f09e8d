"""Benchmark ``s1ray curate`` (rule funnel) from ~59K to ~1M rows: wall time, per-step time, driver
peak memory and the driver's own CPU share, for 1 and 2 CPUs, next to a plain single-process loop.

    .venv/bin/python tests/benchmarks/bench_curate_scale.py [--sizes 59000,944000] [--work /tmp/bench_curate_scale]

1. Pools: the 7 real sources of ../shared/data/pool (19.6K rows), each source written in its own
   schema as JSONL, replicated up to each size with the numbers shifted (or, without numbers, a
   word inserted) per replica, so replicas are distinct questions that exact and near dedup must
   compare; decontaminated against ../shared/data/eval. Pools are written once under --work.
2. s1ray: a whole ``run_curate`` (read the JSONL files, quality, exact + near dedup,
   decontamination, filter, write scored_pool.parquet / kept.jsonl / quarantine.jsonl / report),
   cache off, in a subprocess pinned to N cores (sched_setaffinity before Ray starts, so every
   Ray process inherits it) with a Ray instance of N CPUs. Reported: wall of the run (Ray start
   apart), per step (read, quality+dedup, decontam, filter+write+report; lazy steps run fused into
   the next materializing one), driver peak RSS (ru_maxrss of the driver process: shared-memory
   pages of objects it fetched count too, so this is an upper bound) and driver CPU seconds
   (user+sys of the driver process: its serial work plus Ray's client threads) as a share of wall.
3. Plain: the same funnel the obvious way in one process (bench_curate_rules.Plain: a Python loop
   per row with datasketch MinHash LSH), reading with s1ray's reader and writing Parquet + JSONL.

Prints a summary table (and the driver's CPU seconds per phase) and writes results.json to
--work; BENCH_BATCH_SIZE=N runs s1ray with ``batch_size: N`` instead of the default, and
BENCH_TIMELINE=FILE writes the Ray task timeline (chrome://tracing JSON) of a --worker run, and
BENCH_RAY_RESERVATION=1 turns Ray Data's per-operator reservations back on (s1ray turns them off). The machine is shared: the `uptime`
load is printed next to every run; compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
NUM = re.compile(r"\d+")
WORDS = ["now", "please", "here", "then", "again", "also"]

_spec = importlib.util.spec_from_file_location("bench_curate_rules", HERE / "bench_curate_rules.py")
rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rules)
QUESTION_FIELD = {"math_test": "problem", "minerva_math": "problem"}  # the others use "question"


def _load() -> float:
    return os.getloadavg()[0]


# --- pools --------------------------------------------------------------------------------------

def _perturb(q: str, r: int) -> str:
    if r == 0:
        return q
    if NUM.search(q):
        return NUM.sub(lambda m: str(int(m.group()) + 7 * r) if len(m.group()) < 12 else m.group(), q, count=2)
    words = q.split(" ")
    pos = (r * 2654435761) % (len(words) + 1)
    return " ".join(words[:pos] + [WORDS[r % len(WORDS)] * (1 + r // len(WORDS))] + words[pos:])


def build_pool(work: Path, rows: int) -> Path:
    """Per-source JSONL files (each in its source's schema) holding ~``rows`` rows in all."""
    folder = work / f"pool-{rows}"
    if (folder / "_DONE").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    raw = {name: (DATA / "pool" / file).read_text().splitlines() for name, file, _, _ in rules.SOURCES}
    base = sum(len(v) for v in raw.values())
    replicas = max(1, round(rows / base))
    for name, lines in raw.items():
        field = QUESTION_FIELD.get(name, "question")
        objs = [json.loads(line) for line in lines if line.strip()]
        with open(folder / f"{name}.jsonl", "w") as f:
            for r in range(replicas):
                for obj in objs:
                    q = obj.get(field)
                    out = {**obj, field: _perturb(q, r)} if isinstance(q, str) else obj
                    f.write(json.dumps(out, ensure_ascii=False) + "\n")
    (folder / "_DONE").write_text(str(replicas * base))
    return folder


def curate_config(pool: Path, out: Path) -> dict:
    return {
        "sources": [{"name": n, "path": str(pool / f"{n}.jsonl"), "preset": p, "columns": c}
                    for n, _, p, c in rules.SOURCES],
        "eval_sets": [{"name": n, "path": str(DATA / "eval" / f), "preset": "math"} for n, f in rules.EVALS],
        "output_dir": str(out), "cache": False, "plot": False,
        **({"batch_size": int(os.environ["BENCH_BATCH_SIZE"])} if os.environ.get("BENCH_BATCH_SIZE") else {}),
    }


# --- s1ray, one subprocess per (size, CPU count) -------------------------------------------------

def worker(pool: str, out: str, num_cpus: int) -> dict:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= num_cpus:
        os.sched_setaffinity(0, set(range(num_cpus)))
    from ray.data import DataContext

    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig
    from s1ray.curate import pipeline
    from s1ray.curate.config import CurateConfig

    from s1ray.curate import decontam, dedup, funnel

    DataContext.get_current().enable_progress_bars = False
    steps: dict[str, float] = {}
    phase = ["other"]
    peak: dict[str, float] = {}  # driver RSS peak (MB) per phase, sampled every 0.2 s
    cpu_by: dict[str, float] = {}  # driver CPU seconds (all its threads) per timed phase

    def rss_mb() -> tuple[float, float]:
        """(RSS, private RSS) in MB: RSS also counts object-store pages the driver has mapped."""
        with open("/proc/self/status") as f:
            kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "RssAnon"))}
        return kb["VmRSS"] / 1024, kb["RssAnon"] / 1024

    def sample() -> None:
        while True:
            rss, anon = rss_mb()
            peak[phase[-1]] = max(peak.get(phase[-1], 0.0), rss)
            peak["private (RssAnon), all phases"] = max(peak.get("private (RssAnon), all phases", 0.0), anon)
            time.sleep(0.2)  # cheap: ru_maxrss gives the exact peak; this only attributes it

    threading.Thread(target=sample, daemon=True).start()

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    spans: list[tuple[str, float, float]] = []  # (phase, start, end) in time.time() seconds

    def timed(name, fn, step=True):
        def wrapper(*a, **kw):
            t, c, t_abs = time.perf_counter(), cpu_s(), time.time()
            phase.append(name)
            try:
                return fn(*a, **kw)
            finally:
                phase.pop()
                cpu_by[name] = cpu_by.get(name, 0.0) + cpu_s() - c
                spans.append((name, t_abs, time.time()))
                if step:
                    steps[name] = steps.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    pipeline._cached_read = timed("read", pipeline._cached_read)
    pipeline.write_ordered = timed("write", pipeline.write_ordered)
    # Driver-side global steps: timed for the memory table only (their time is inside the stages).
    dedup.find_duplicates = timed("dedup global step", dedup.find_duplicates, step=False)
    dedup.collect = timed("collect features", dedup.collect, step=False)
    decontam.find_contamination = timed("decontam global step", decontam.find_contamination, step=False)
    funnel.build_report = timed("report", funnel.build_report, step=False)
    run_stage = pipeline.run_stage
    pipeline.run_stage = lambda stage, ds, c: timed(f"stage {stage.name}", run_stage, step=False)(stage, ds, c)
    if os.environ.get("BENCH_RAY_RESERVATION"):  # A/B: Ray Data's default per-operator reservations
        from contextlib import contextmanager

        plain_context = pipeline._data_context

        @contextmanager
        def with_reservation(cfg):
            with plain_context(cfg):
                DataContext.get_current().op_resource_reservation_enabled = True
                yield

        pipeline._data_context = with_reservation
    t0 = time.perf_counter()
    init_ray(RayConfig(num_cpus=num_cpus))
    init_s = time.perf_counter() - t0
    cfg = CurateConfig.model_validate(curate_config(Path(pool), Path(out)))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    summary = pipeline.run_curate(cfg)
    wall = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    if os.environ.get("BENCH_TIMELINE"):  # Chrome trace of every Ray task, to see idle CPUs
        import ray

        ray.timeline(filename=os.environ["BENCH_TIMELINE"])
    driver_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    st = summary["stages"]
    steps.update({name: st[name].get("seconds", 0.0) for name in ("quality", "dedup", "decontam") if name in st})
    steps["report"] = wall - sum(steps.values())  # filter is fused into the write; the rest is the report
    return {"num_cpus": num_cpus, "rows": summary["input"], "kept": summary["kept"], "init_s": init_s,
            "wall_s": wall, "steps_s": steps, "driver_cpu_s": driver_cpu,
            "driver_peak_rss_mb": cpu1.ru_maxrss / 1024, "driver_peak_by_phase_mb": peak,
            "driver_cpu_by_phase_s": cpu_by, "phase_spans": spans,
            "reasons": summary["reasons"]}


def run_s1ray(pool: Path, work: Path, num_cpus: int) -> dict:
    out = work / f"out-{pool.name}-{num_cpus}cpu"
    cmd = [sys.executable, __file__, "--worker", str(num_cpus), "--pool", str(pool), "--out", str(out)]
    load = _load()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    if res.returncode or not lines:
        raise RuntimeError(f"worker {num_cpus} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "load_before": load, "load_after": _load()}


# --- the plain single-process loop --------------------------------------------------------------

def run_plain(pool: Path, work: Path) -> dict:
    """Read with s1ray's reader, rules.Plain's funnel, write Parquet + kept JSONL; one process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from s1ray.curate.config import CurateConfig
    from s1ray.curate.decontam import load_eval_sets
    from s1ray.io.readers import read_source
    from s1ray.io.writers import write_jsonl
    from s1ray.records import to_table

    load = _load()
    cfg = CurateConfig.model_validate(curate_config(pool, work / "plain"))
    t = time.perf_counter()
    records, n_in = [], 0
    for spec in cfg.sources:
        res = read_source(spec)
        records.extend(res.records)
        n_in += res.n_rows
    t_read = time.perf_counter() - t
    rows = {c: [r[c] for r in records] for c in ("id", "question", "answer", "solution", "thinking", "attempt")}
    reasons = rules.Plain().run(rows, load_eval_sets(cfg.eval_sets))
    t_funnel = time.perf_counter() - t - t_read
    table = to_table(records).append_column("drop_reason", pa.array(reasons, pa.string()))
    (work / "plain").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / "plain" / "scored_pool.parquet")
    write_jsonl((r for r, why in zip(records, reasons) if not why), work / "plain" / "kept.jsonl")
    wall = time.perf_counter() - t
    return {"rows": n_in, "kept": reasons.count(""), "wall_s": wall,
            "steps_s": {"read": t_read, "funnel": t_funnel, "write": wall - t_read - t_funnel},
            "load_before": load, "load_after": _load()}


# --- main -----------------------------------------------------------------------------------------

def summary_table(results: dict) -> str:
    lines = ["| rows | run | wall s | read | quality+dedup | decontam | write | report | driver peak MB | "
             "driver CPU share | vs 1 CPU | vs plain | load |", "|" + "---|" * 13]
    for size, r in results["sizes"].items():
        plain = r.get("plain")
        one = r.get("s1ray_1cpu")
        for key in ("plain", "s1ray_1cpu", "s1ray_2cpu"):
            x = r.get(key)
            if not x:
                continue
            st = x["steps_s"]
            qd = st.get("quality", 0) + st.get("dedup", 0) if key != "plain" else st.get("funnel", 0)
            share = f"{x['driver_cpu_s'] / x['wall_s']:.1%}" if "driver_cpu_s" in x else "100% (one process)"
            vs1 = f"{one['wall_s'] / x['wall_s']:.2f}x" if one and key != "plain" else ""
            vsp = f"{plain['wall_s'] / x['wall_s']:.2f}x" if plain and key != "plain" else ""
            lines.append(
                f"| {x['rows']:,} | {key} | {x['wall_s']:.1f} | {st.get('read', 0):.1f} | {qd:.1f} | "
                f"{st.get('decontam', 0):.1f} | {st.get('write', 0):.1f} | {st.get('report', 0):.1f} | "
                f"{x.get('driver_peak_rss_mb', 0):.0f} | {share} | {vs1} | {vsp} | "
                f"{x['load_before']:.1f}→{x['load_after']:.1f} |")
    lines.append("\ndriver CPU seconds per phase (all driver threads; nested phases count in both):")
    for size, r in results["sizes"].items():
        for key in ("s1ray_1cpu", "s1ray_2cpu"):
            if r.get(key) and r[key].get("driver_cpu_by_phase_s"):
                by = ", ".join(f"{k} {v:.2f}" for k, v in r[key]["driver_cpu_by_phase_s"].items())
                lines.append(f"  {r[key]['rows']:,} {key}: {r[key]['driver_cpu_s']:.1f} s in all; {by}")
    sizes = list(results["sizes"].values())
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        for key in ("s1ray_1cpu", "s1ray_2cpu", "plain"):
            if a.get(key) and b.get(key):
                grow = b[key]["rows"] / a[key]["rows"]
                mem = (f", driver peak {a[key]['driver_peak_rss_mb']:.0f} -> {b[key]['driver_peak_rss_mb']:.0f} MB"
                       if "driver_peak_rss_mb" in a[key] else "")
                lines.append(f"\ngrowth {a[key]['rows']:,} -> {b[key]['rows']:,} rows ({grow:.1f}x), {key}: "
                             f"time {b[key]['wall_s'] / a[key]['wall_s']:.1f}x{mem}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="59000,944000")
    ap.add_argument("--work", default="/tmp/bench_curate_scale")
    ap.add_argument("--cpus", default="1,2")
    ap.add_argument("--no-plain", action="store_true", help="skip the single-process baseline")
    ap.add_argument("--worker", type=int)
    ap.add_argument("--pool")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.pool, a.out, a.worker)), flush=True)
        return
    if not (DATA / "pool").exists():
        sys.exit(f"{DATA / 'pool'} not found: this benchmark scales the shared reference pool")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"cpu_count": os.cpu_count(), "sizes": {}}
    t_all = time.perf_counter()
    for size in [int(s) for s in a.sizes.split(",")]:
        t = time.perf_counter()
        pool = build_pool(work, size)
        print(f"pool {pool} ready in {time.perf_counter() - t:.1f} s", flush=True)
        r: dict = {}
        for n in [int(c) for c in a.cpus.split(",")]:
            r[f"s1ray_{n}cpu"] = run_s1ray(pool, work, n)
            print(f"  s1ray {n} CPU: {r[f's1ray_{n}cpu']['wall_s']:.1f} s", flush=True)
        if not a.no_plain:
            r["plain"] = run_plain(pool, work)
            print(f"  plain: {r['plain']['wall_s']:.1f} s", flush=True)
        results["sizes"][str(size)] = r
    results["total_s"] = time.perf_counter() - t_all
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(summary_table(results))
    print(f"\ntotal {results['total_s']:.0f} s; results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
