"""Benchmark near-dedup precision and recall on real questions: rewordings vs sibling exercises.

    .venv/bin/python tests/benchmarks/bench_dedup_precision.py [--out /tmp/bench_dedup_precision]

Base questions are real: the shared pool (../shared/data/pool, when it exists: GSM8K, MATH,
college math, MMLU-STEM, ...) and packaged sets (CHAMP, reasoning-gym). From them it plants

* rewordings that must be merged with their base: one prose word swapped for a synonym
  (never a key word), one filler word inserted, two synonym swaps;
* siblings that must stay: one key word flipped (min/max, long/short, more/less, odd/even,
  kinetic/potential, boys/girls, ascending/descending, ...), one number changed, the same
  multiple-choice stem with other options;
* real sibling families with true answers (reasoning-gym): the same text with another letter
  to count, the same list sorted the other way, and whole generated task sets (family
  relationships, arithmetic, GCD/LCM, time intervals, ...), where any merge of two different
  answers is a wrong merge;

and reports, per length bucket (words), the share of rewordings caught and of siblings kept,
plus wrong merges (a row merged into a group of another question), for s1ray's settings and
the previous ones (``--old``: basic key words, no one-edit keys, no answer/options guards).
On the shared pool's real rows alone it also counts near merges and how many of them join
different reference answers. Writes results.json (and merged_pairs.jsonl to inspect) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
POOL_FILES = [("gsm8k_train.jsonl", "question", None), ("math_test.jsonl", "problem", None),
              ("college_math.jsonl", "question", "answer"), ("mmlu_stem.jsonl", "question", "answer"),
              ("minerva_math.jsonl", "problem", None), ("gaokao2023en.jsonl", "question", "answer"),
              ("olympiadbench.jsonl", "question", None)]
BUCKETS = ((0, 12, "<12"), (12, 24, "12-23"), (24, 48, "24-47"), (48, 10**6, ">=48"))
NUM = re.compile(r"\b\d+\b")

# Synonym swaps a rewording makes; none of these words is a key word of s1ray's math key.
SYNONYMS = {"find": "determine", "determine": "find", "compute": "calculate", "calculate": "compute",
            "evaluate": "compute", "what": "which", "show": "prove", "prove": "show", "given": "provided",
            "suppose": "assume", "assume": "suppose", "has": "owns", "have": "own", "shop": "store",
            "store": "shop", "car": "automobile", "money": "cash", "amount": "quantity", "person": "individual",
            "people": "persons", "uses": "utilizes", "needs": "requires", "need": "require", "wants": "wishes",
            "gets": "obtains", "got": "obtained", "pick": "choose", "chosen": "selected", "selected": "chosen",
            "then": "afterwards", "walks": "strolls", "runs": "jogs", "friends": "pals", "trip": "journey",
            "began": "started", "started": "began", "finished": "completed", "completed": "finished",
            "simplify": "reduce", "write": "express", "express": "write", "answer": "response", "using": "with",
            "identify": "name", "consider": "take", "makes": "produces", "takes": "requires", "says": "states",
            "problem": "question", "question": "problem", "solve": "resolve", "let": "suppose", "is": "equals"}
FILLER = ["now", "please", "then", "here", "also"]
# One key word flipped: a sibling exercise (another question, another answer).
FLIPS = {"minimum": "maximum", "maximum": "minimum", "smallest": "largest", "largest": "smallest",
         "least": "greatest", "greatest": "least", "more": "less", "less": "more", "fewer": "more",
         "longer": "shorter", "shorter": "longer", "long": "short", "short": "long", "odd": "even",
         "even": "odd", "positive": "negative", "negative": "positive", "sum": "product", "product": "sum",
         "perimeter": "area", "area": "perimeter", "increase": "decrease", "decrease": "increase",
         "before": "after", "after": "before", "above": "below", "below": "above", "inside": "outside",
         "boys": "girls", "girls": "boys", "buys": "sells", "sells": "buys", "first": "last", "last": "first",
         "kinetic": "potential", "potential": "kinetic", "sine": "cosine", "cosine": "sine",
         "opposite": "adjacent", "adjacent": "opposite", "ascending": "descending", "descending": "ascending",
         "larger": "smaller", "smaller": "larger", "faster": "slower", "slower": "faster", "left": "right",
         "right": "left", "older": "younger", "younger": "older", "median": "mean", "mean": "median",
         "minutes": "hours", "hours": "minutes", "related": "unrelated", "velocity": "acceleration",
         "momentum": "energy", "energy": "momentum"}

OLD = {"key_words": "basic", "short_tokens": 0, "answer_guard": False, "choices_aware": False}


def bucket(q: str) -> str:
    n = len(q.split())
    return next(name for lo, hi, name in BUCKETS if lo <= n < hi)


def _prose_positions(words: list[str]) -> list[bool]:
    depth, out = 0, []
    for w in words:
        out.append(depth % 2 == 0 and "$" not in w and "\\" not in w)
        depth += w.count("$")
    return out


def swap_words(q: str, table: dict[str, str], rng: random.Random, k: int = 1) -> str | None:
    """Replace k prose words found in ``table`` (case kept for the first letter); None if impossible."""
    words = q.split(" ")
    prose = _prose_positions(words)
    cand = [i for i, w in enumerate(words) if prose[i] and re.sub(r"\W", "", w).lower() in table]
    if len(cand) < k:
        return None
    for i in rng.sample(cand, k):
        core = re.sub(r"\W", "", words[i])
        new = table[core.lower()]
        new = new.capitalize() if core[0].isupper() else new
        words[i] = words[i].replace(core, new, 1)
    return " ".join(words)


def insert_filler(q: str, rng: random.Random) -> str:
    words = q.split(" ")
    prose = _prose_positions(words)
    spots = [i for i, w in enumerate(words) if prose[i] and w.isalpha()] or [0]
    words.insert(rng.choice(spots), rng.choice(FILLER))
    return " ".join(words)


def change_number(q: str, rng: random.Random) -> str | None:
    nums = list(NUM.finditer(q))
    if not nums:
        return None
    m = rng.choice(nums)
    return q[:m.start()] + str(int(m.group()) + rng.randint(1, 9)) + q[m.end():]


# --- real questions --------------------------------------------------------------------------

def real_questions(limit_per_file: int, rng: random.Random) -> list[dict]:
    out = []
    if DATA.exists():
        for fname, qcol, acol in POOL_FILES:
            path = DATA / "pool" / fname
            if not path.exists():
                continue
            rows = [json.loads(line) for line in open(path)]
            for r in rng.sample(rows, min(limit_per_file, len(rows))):
                q = r.get(qcol)
                if isinstance(q, str) and q.strip() and "[asy]" not in q:
                    out.append({"question": q.strip(), "answer": None, "source": fname.split(".")[0],
                                "choices": r.get("choices") if fname.startswith("mmlu") else None})
    from s1ray.io.packaged import champ_rows

    out += [{"question": r["question"], "answer": None, "source": "champ", "choices": None} for r in champ_rows()]
    import reasoning_gym

    for task in ("count_bits", "simple_equations", "letter_counting", "calendar_arithmetic", "gcd",
                 "family_relationships", "time_intervals", "leg_counting"):
        for e in reasoning_gym.create_dataset(task, size=40, seed=7):
            out.append({"question": e["question"], "answer": None, "source": f"gym/{task}", "choices": None})
    return out


def planted(bases: list[dict], rng: random.Random) -> list[dict]:
    """Rows: question, answer, choices, truth (group id), kind, bucket of the base."""
    rows = []
    seen = set()
    for t, b in enumerate(bases):
        q = b["question"]
        if q.lower() in seen:
            continue
        seen.add(q.lower())
        base = {"question": q, "answer": None, "choices": b["choices"], "truth": t, "kind": "base",
                "bucket": bucket(q), "source": b["source"]}
        rows.append(base)
        variants = [("sub1", swap_words(q, SYNONYMS, rng, 1), t), ("ins1", insert_filler(q, rng), t),
                    ("sub2", swap_words(q, SYNONYMS, rng, 2), t),
                    ("keyword_flip", swap_words(q, FLIPS, rng, 1), f"{t}/flip"),
                    ("number_variant", change_number(q, rng), f"{t}/num")]
        for kind, vq, truth in variants:
            if vq and vq != q:
                rows.append({**base, "question": vq, "truth": truth, "kind": kind})
        if b["choices"] and len(b["choices"]) >= 2:
            other = list(b["choices"])
            fresh = [o for o in ("none of the above", "all of the above", "cannot be determined") if o not in other]
            other[rng.randrange(len(other))] = rng.choice(fresh)
            rows.append({**base, "choices": other, "truth": f"{t}/options", "kind": "other_options"})
    return rows


def gym_siblings(rng: random.Random) -> list[dict]:
    """Real task families with true answers: merges of two different answers are wrong merges."""
    import reasoning_gym

    rows = []
    for e in reasoning_gym.create_dataset("letter_counting", size=150, seed=11):
        m = re.search(r'letter "(.)" appear in the text: "(.*)"', e["question"], re.S)
        if not m:
            continue
        text = m.group(2)
        letters = sorted({c for c in text.lower() if c.isalpha()} - {m.group(1)})
        other = rng.choice(letters)
        sib = e["question"].replace(f'letter "{m.group(1)}"', f'letter "{other}"')
        for q in (e["question"], sib):
            letter = re.search(r'letter "(.)"', q).group(1)
            rows.append({"question": q, "answer": str(text.lower().count(letter)), "family": "letter_counting"})
    for e in reasoning_gym.create_dataset("number_sorting", size=100, seed=12):
        q = e["question"]
        flipped = q.replace("descending", "ascending") if "descending" in q else q.replace("ascending", "descending")
        ans = e["answer"] if isinstance(e["answer"], str) else json.dumps(e["answer"])
        rows.append({"question": q, "answer": ans, "family": "number_sorting"})
        rows.append({"question": flipped, "answer": "reversed:" + ans, "family": "number_sorting"})
    for task in ("family_relationships", "basic_arithmetic", "gcd", "lcm", "time_intervals", "calendar_arithmetic",
                 "fraction_simplification", "leg_counting", "simple_equations", "count_bits", "gsm_symbolic"):
        for e in reasoning_gym.create_dataset(task, size=300, seed=13):
            rows.append({"question": e["question"], "answer": str(e["answer"]), "family": task})
    return rows


# --- running s1ray's dedup ----------------------------------------------------------------------

def run_dedup(rows: list[dict], **dedup_kw) -> dict[str, np.ndarray]:
    from s1ray.curate.config import CurateConfig, DedupConfig
    from s1ray.curate.dedup import dedup_features, find_duplicates
    from s1ray.curate.quality import quality_columns
    from s1ray.records import make_record, to_table

    cfg = CurateConfig(sources=[], dedup=DedupConfig(**dedup_kw))
    recs = [make_record(source="b", origin=str(i), question=r["question"], answer=r.get("answer"),
                        choices=r.get("choices")) for i, r in enumerate(rows)]
    t = to_table(recs)
    t = quality_columns(t.append_column("row_index", pa.array(range(t.num_rows), pa.int64())))
    return find_duplicates(dedup_features(t, cfg), cfg.dedup)


def _group_of(found: dict) -> np.ndarray:
    dup_of = found["dup_of"]
    return np.where(dup_of >= 0, dup_of, np.arange(len(dup_of)))


def score_planted(rows: list[dict], found: dict) -> dict:
    group = _group_of(found)
    base_of = {}
    for i, r in enumerate(rows):
        if r["kind"] == "base":
            base_of[r["truth"]] = i
    truth = [r["truth"] for r in rows]
    res: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    family = [r["truth"] if isinstance(r["truth"], int) else int(str(r["truth"]).split("/")[0]) for r in rows]
    wrong, cross, examples = 0, 0, []
    for i, r in enumerate(rows):
        if found["kind"][i] != 0 and truth[group[i]] != truth[i]:
            if family[group[i]] == family[i]:  # a sibling merged with its own base (or a rewording of it)
                wrong += 1
            else:  # two real questions of the pool (or a variant that equals another real question)
                cross += 1
                examples.append((r["question"][:140], rows[group[i]]["question"][:140]))
        if r["kind"] == "base":
            continue
        b = base_of[family[i]]
        same_group = group[i] == group[b]
        ok = same_group if r["kind"] in ("sub1", "ins1", "sub2") else not same_group
        for bk in (r["bucket"], "all"):
            res[r["kind"]][bk][0] += int(ok)
            res[r["kind"]][bk][1] += 1
    base_merged = sum(1 for i, r in enumerate(rows) if r["kind"] == "base" and found["kind"][i] != 0
                      and rows[group[i]]["kind"] == "base")
    return {"ok_rate": {k: {bk: round(a / n, 4) for bk, (a, n) in v.items()} for k, v in res.items()},
            "counts": {k: {bk: n for bk, (_, n) in v.items()} for k, v in res.items()},
            "wrong_merges": wrong, "cross_family_merges": cross, "cross_family_examples": examples[:20],
            "real_bases_merged_into_real_bases": base_merged}


def score_answers(rows: list[dict], found: dict) -> dict:
    """Merges whose two questions have different (normalized) reference answers."""
    from s1ray.curate.text import answer_keys

    keys = answer_keys(pa.array([r.get("answer") for r in rows], pa.string()))
    group = _group_of(found)
    near = np.flatnonzero(found["kind"] == 2)
    exact = np.flatnonzero(found["kind"] == 1)
    diff = [int(i) for i in near if keys[i] and keys[group[i]] and keys[i] != keys[group[i]]]
    per_family = Counter(rows[i].get("family", rows[i].get("source")) for i in diff)
    return {"near_merges": int(len(near)), "exact_merges": int(len(exact)),
            "near_merges_with_different_answers": len(diff), "by_family": dict(per_family),
            "examples": [(rows[i]["question"][:160], rows[group[i]]["question"][:160]) for i in diff[:5]]}


def shared_pool_real(limit: int | None = None) -> list[dict]:
    """Every row of the shared pool with its reference answer, via s1ray's own readers."""
    if not DATA.exists():
        return []
    from s1ray.io.readers import SourceConfig, read_source

    specs = [("math_test", "math", {}), ("gsm8k_train", "gsm8k", {}), ("olympiadbench", "olympiadbench", {}),
             ("minerva_math", "math", {}), ("college_math", "generic", {}), ("mmlu_stem", "multiple_choice", {}),
             ("gaokao2023en", "generic", {})]
    out = []
    for name, preset, cols in specs:
        res = read_source(SourceConfig(name=name, path=str(DATA / "pool" / f"{name}.jsonl"), preset=preset,
                                       columns=cols, limit=limit))
        out += [{"question": r["question"], "answer": r["answer"], "choices": r["choices"], "source": name}
                for r in res.records]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_dedup_precision")
    ap.add_argument("--per-file", type=int, default=1500, help="real base questions sampled per shared-pool file")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    results: dict = {"load_avg_start": os.getloadavg(), "shared_pool": DATA.exists()}

    bases = real_questions(args.per_file, rng)
    rows = planted(bases, rng)
    results["planted_rows"] = len(rows)
    results["planted_kinds"] = dict(Counter(r["kind"] for r in rows))
    fam = gym_siblings(rng)
    real = shared_pool_real()
    pairs_out = []
    for name, kw in (("s1ray", {}), ("old", OLD)):
        t0 = time.perf_counter()
        found = run_dedup(rows, **kw)
        res = {"planted": score_planted(rows, found), "seconds_planted": round(time.perf_counter() - t0, 2)}
        # The planted rows carry no answers: only the key-word test keeps the flipped siblings apart.
        res["families_with_answers"] = score_answers(fam, run_dedup(fam, **kw))
        # The same families with their answers hidden from dedup: what the differing-token test alone does.
        res["families_answers_hidden"] = score_answers(fam, run_dedup([{**r, "answer": None} for r in fam], **kw))
        if real:
            t0 = time.perf_counter()
            found_real = run_dedup(real, **kw)
            res["shared_pool_real"] = {**score_answers(real, found_real),
                                       "rows": len(real), "seconds": round(time.perf_counter() - t0, 2)}
            g = _group_of(found_real)
            for i in np.flatnonzero(found_real["kind"] == 2):
                pairs_out.append({"settings": name, "row": real[i]["question"], "kept": real[g[i]]["question"],
                                  "answers": [real[i]["answer"], real[g[i]]["answer"]]})
        results[name] = res
    results["load_avg_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    with open(out / "merged_pairs.jsonl", "w") as f:
        for p in pairs_out:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")

    print(f"planted rows: {len(rows)} {results['planted_kinds']}; shared pool: {DATA.exists()}")
    kinds = ("sub1", "ins1", "sub2", "keyword_flip", "number_variant", "other_options")
    labels = [b[2] for b in BUCKETS] + ["all"]
    print("\nshare handled right (rewordings merged; siblings kept), per length bucket (words):")
    print("| settings | kind | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    for name in ("s1ray", "old"):
        p = results[name]["planted"]
        for k in kinds:
            if k not in p["ok_rate"]:
                continue
            cells = [f"{p['ok_rate'][k].get(b, float('nan')):.3f} ({p['counts'][k].get(b, 0)})" for b in labels]
            print(f"| {name} | {k} | " + " | ".join(cells) + " |")
    for name in ("s1ray", "old"):
        r = results[name]
        print(f"\n{name}: siblings merged with their own base question {r['planted']['wrong_merges']}; merges "
              f"across base questions {r['planted']['cross_family_merges']} (real bases into real bases "
              f"{r['planted']['real_bases_merged_into_real_bases']}; see results.json)")
        fa = r["families_with_answers"]
        print(f"  reasoning-gym families ({len(fam)} rows): {fa['near_merges']} near merges, "
              f"{fa['near_merges_with_different_answers']} with different answers {fa['by_family']}")
        fh = r["families_answers_hidden"]
        print(f"  same families, answers hidden from dedup: {fh['near_merges']} near merges, "
              f"{fh['near_merges_with_different_answers']} with different answers {fh['by_family']}")
        if "shared_pool_real" in r:
            sp = r["shared_pool_real"]
            print(f"  shared pool real rows ({sp['rows']}): {sp['near_merges']} near merges, "
                  f"{sp['near_merges_with_different_answers']} with different answers, {sp['exact_merges']} exact; "
                  f"{sp['seconds']} s")
    print(f"\nload average start {results['load_avg_start']}, end {results['load_avg_end']}")
    print(f"wrote {out / 'results.json'} and {out / 'merged_pairs.jsonl'}")


if __name__ == "__main__":
    main()
