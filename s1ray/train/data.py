"""s1 formatting, loss mask, truncation accounting, packing and the deterministic batch plan.

The assistant turn is ``think + trace + answer_delim + answer`` inside the model's chat
template. Only the tokens after the generation prompt (the assistant content and the
template's closing) carry labels; system and user text never do.

Rows are what the trainer batches: a packed sequence of whole examples (``pack``) or one
example (``group``/``pad``). In a packed row the position ids restart at 0 for every
example; transformers turns restarting position ids (with no attention mask) into a
block-diagonal causal mask, so no example attends to another. Rows are right-padded and
never given an attention mask: with causal attention, padding after the real tokens can
never be seen by them.

The batch plan is a pure function of (row lengths, epoch, seed, layout), so every rank
computes the same plan and a resumed run knows exactly which rows come next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from s1ray.records import primary_thinking

IGNORE = -100


@dataclass
class DataStats:
    n_records: int = 0
    n_examples: int = 0
    n_truncated: int = 0  # examples longer than block_size (cut to block_size)
    n_quarantined: int = 0
    n_tokens: int = 0
    n_supervised: int = 0
    max_length: int = 0
    n_truncated_away: int = 0  # so long the prompt alone filled the block: nothing left to learn
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    @property
    def truncated_fraction(self) -> float:
        return self.n_truncated / max(1, self.n_examples + self.n_truncated_away)

    def as_dict(self) -> dict[str, Any]:
        return {"n_records": self.n_records, "n_examples": self.n_examples, "n_truncated": self.n_truncated,
                "truncated_fraction": round(self.truncated_fraction, 4),
                "n_truncated_away": self.n_truncated_away, "n_quarantined": self.n_quarantined,
                "n_tokens": self.n_tokens, "n_supervised": self.n_supervised, "max_length": self.max_length}


S1_ANSWER_PREFIX = "Answer: "


def _all_traces(record: dict[str, Any]) -> list[str]:
    traces = record.get("thinking")
    if traces is None or isinstance(traces, str):
        return [traces] if traces else []
    return [str(t) for t in list(traces) if t is not None]


def format_chat(record: dict[str, Any], tokenizer: Any, delimiters: Any) -> tuple[str, str]:
    """(prompt text up to the assistant turn, supervised completion text) for one record.

    ``delimiters.format == "s1"`` is s1's data/tokenization.py: the traces joined by newlines
    and stripped, ``"Answer: " + attempt`` when the attempt holds no "Answer:", then stripped;
    the question as is. ``s1ray``: the first trace and the answer text, stripped.
    """
    s1 = getattr(delimiters, "format", "s1ray") == "s1"
    trace = "\n".join(_all_traces(record)).strip() if s1 else primary_thinking(record).strip()
    if not trace:
        raise ValueError("no reasoning trace (`thinking` is empty)")
    fields = [delimiters.answer_field] + [f for f in ("attempt", "solution", "answer") if f != delimiters.answer_field]
    answer = next((record[f] for f in fields if (record.get(f) or "").strip()), "")
    if not answer:
        raise ValueError("no answer text (`attempt`, `solution` and `answer` are all empty)")
    if s1 and "Answer:" not in answer:
        answer = S1_ANSWER_PREFIX + answer
    answer = answer.strip()
    messages = []
    if delimiters.system_prompt is not None:
        messages.append({"role": "system", "content": delimiters.system_prompt})
    messages.append({"role": "user", "content": record["question"] if s1 else record["question"].strip()})
    assistant = delimiters.think + trace + delimiters.answer + answer
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": assistant}], tokenize=False)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the full conversation")
    return prompt, full[len(prompt):]


def tokenize_example(prompt: str, completion: str, tokenizer: Any, block_size: int) -> tuple[list[int], list[int], bool]:
    """input_ids, labels (IGNORE on the prompt) and whether the example was cut to block_size."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = p + c
    labels = [IGNORE] * len(p) + c
    truncated = len(ids) > block_size
    return ids[:block_size], labels[:block_size], truncated


def build_examples(records: Iterable[dict[str, Any]], tokenizer: Any, delimiters: Any,
                   block_size: int) -> tuple[list[dict[str, Any]], DataStats]:
    """Tokenised examples; bad rows are quarantined with a reason, truncation is counted."""
    stats = DataStats()
    examples = []
    for rec in records:
        stats.n_records += 1
        try:
            prompt, completion = format_chat(rec, tokenizer, delimiters)
        except ValueError as e:
            stats.quarantined.append({"id": rec.get("id"), "origin": rec.get("origin"), "reason": str(e)})
            continue
        ids, labels, truncated = tokenize_example(prompt, completion, tokenizer, block_size)
        if all(t == IGNORE for t in labels[1:]):
            stats.n_truncated_away += 1
            stats.quarantined.append({"id": rec.get("id"), "origin": rec.get("origin"),
                                      "reason": f"prompt alone fills block_size={block_size}"})
            continue
        stats.n_truncated += truncated
        labels[0] = IGNORE  # never a target: in a packed row it would be predicted from the previous example
        examples.append({"id": rec["id"], "input_ids": ids, "labels": labels})
        stats.n_tokens += len(ids)
        stats.n_supervised += sum(t != IGNORE for t in labels)
        stats.max_length = max(stats.max_length, len(ids))
    stats.n_examples = len(examples)
    stats.n_quarantined = len(stats.quarantined)
    return examples, stats


def pack_bins(lengths: list[int], block_size: int) -> list[list[int]]:
    """First-fit decreasing: example indices grouped into bins of at most block_size tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free = np.zeros(0, dtype=np.int64)
    bins: list[list[int]] = []
    for i in order:
        fits = np.nonzero(free >= lengths[i])[0]
        if len(fits):
            b = int(fits[0])
        else:
            b = len(bins)
            bins.append([])
            free = np.append(free, block_size)
        bins[b].append(i)
        free[b] -= lengths[i]
    return [sorted(b) for b in bins]


def build_rows(examples: list[dict[str, Any]], batching: str, block_size: int) -> pa.Table:
    """The rows the trainer batches, as an Arrow table (one packed sequence or one example each)."""
    if batching == "pack":
        groups = pack_bins([len(e["input_ids"]) for e in examples], block_size)
    else:
        groups = [[i] for i in range(len(examples))]
    cols: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "example_ids": []}
    for g in groups:
        ids, labels, pos, names = [], [], [], []
        for i in g:
            e = examples[i]
            ids += e["input_ids"]
            labels += e["labels"]
            pos += range(len(e["input_ids"]))
            names.append(e["id"])
        cols["input_ids"].append(ids)
        cols["labels"].append(labels)
        cols["position_ids"].append(pos)
        cols["example_ids"].append(names)
    i32 = pa.list_(pa.int32())
    return pa.table({"input_ids": pa.array(cols["input_ids"], i32), "labels": pa.array(cols["labels"], i32),
                     "position_ids": pa.array(cols["position_ids"], i32),
                     "example_ids": pa.array(cols["example_ids"], pa.list_(pa.string()))})


def epoch_plan(lengths: list[int], batching: str, micro: int, micro_per_step: int, epoch: int, seed: int,
               group_size_multiplier: int = 16, workers: int = 1) -> list[list[list[int]]]:
    """steps -> micro-batches (``micro_per_step`` of them, = accumulation x workers, rank-major:
    rank r runs ``step[r * accumulation:(r + 1) * accumulation]``) -> row indices.

    Every row is used exactly once per epoch; the last step may hold empty micro-batches.
    ``group`` sorts rows by length within chunks of ``group_size_multiplier`` steps so a
    micro-batch holds rows of similar length, then shuffles the steps. ``balance`` does the same
    and also deals each step's micro-batches, longest first, round-robin over the ``workers``
    ranks, so every rank's k-th micro-batch is about as long as the others' (no rank waits long
    for the slowest; docs/paper-scale.md "Stragglers: length-balanced steps").
    """
    rng = np.random.default_rng([seed, epoch])
    order = [int(i) for i in rng.permutation(len(lengths))]
    sort = batching in ("group", "balance")
    if sort:
        chunk = micro * micro_per_step * group_size_multiplier
        order = [i for s in range(0, len(order), chunk)
                 for i in sorted(order[s:s + chunk], key=lambda i: (-lengths[i], i))]
    micros = [order[s:s + micro] for s in range(0, len(order), micro)]
    steps = [micros[s:s + micro_per_step] for s in range(0, len(micros), micro_per_step)]
    if sort:
        steps = [steps[int(i)] for i in rng.permutation(len(steps))]
    for step in steps:
        step += [[] for _ in range(micro_per_step - len(step))]
    if batching == "balance":
        steps = [_deal(step, lengths, workers) for step in steps]
    return steps


def _deal(step: list[list[int]], lengths: list[int], workers: int) -> list[list[int]]:
    """The step's micro-batches, longest first, dealt round-robin: the j-th longest goes to rank
    j % workers as its (j // workers)-th micro-batch (back in rank-major order)."""
    if len(step) % workers:
        raise ValueError(f"a step of {len(step)} micro-batches cannot be split over {workers} workers")
    accum = len(step) // workers
    ranked = sorted(step, key=lambda mb: -micro_batch_cost(mb, lengths))
    return [ranked[k * workers + r] for r in range(workers) for k in range(accum)]


def micro_batch_cost(mb: list[int], lengths: list[int], attention: float = 0.0,
                     example_lengths: list[list[int]] | None = None) -> float:
    """Compute of one micro-batch in token units: rows x padded width, plus ``attention`` x sum of
    each example's length squared (causal attention within an example; padding attends to nothing).
    ``example_lengths[row]``: the examples packed in a row (default: the row is one example)."""
    if not mb:
        return 0.0
    width = max(lengths[i] for i in mb)
    if not attention:
        return float(len(mb) * width)
    squares = sum(n * n for i in mb for n in (example_lengths[i] if example_lengths else [lengths[i]]))
    return len(mb) * width + attention * squares


def waiting_fraction(example_lengths: list[int], world_size: int, batching: str, micro_batch_size: int = 1,
                     gradient_accumulation: int = 1, block_size: int = 32_768, attention: float = 0.0,
                     seed: int = 0, group_size_multiplier: int = 16, epochs: int = 1) -> float:
    """The fraction of ideal throughput lost to ranks waiting for the slowest one, predicted from lengths.

    Rows and plan are the trainer's own (``pack``: first-fit bins; else one example per row; then
    :func:`epoch_plan`). A micro-batch costs :func:`micro_batch_cost` (tokens, plus ``attention``
    x length^2: for a dense transformer attention's share of a token's FLOPs at context L is about
    n_layers x hidden x L / n_params, so ``attention`` ~ n_layers x hidden / n_params, 1.0e-5 for
    Qwen2.5-32B). Ranks meet at every micro-batch (ZeRO-3 gathers parameters layer by layer), so a
    step takes the sum over accumulation slots of the slowest rank's micro-batch. Ideal: all the
    work spread evenly over the ranks. Returns 1 - ideal / predicted.
    """
    if batching == "pack":
        bins = pack_bins(example_lengths, block_size)
        per_row = [[example_lengths[i] for i in b] for b in bins]
    else:
        per_row = [[n] for n in example_lengths]
    lengths = [sum(r) for r in per_row]
    micro_per_step = gradient_accumulation * world_size
    work = predicted = 0.0
    for epoch in range(epochs):
        for step in epoch_plan(lengths, batching, micro_batch_size, micro_per_step, epoch, seed,
                               group_size_multiplier, workers=world_size):
            costs = [micro_batch_cost(mb, lengths, attention, per_row) for mb in step]
            work += sum(costs)
            predicted += sum(max(costs[r * gradient_accumulation + k] for r in range(world_size))
                             for k in range(gradient_accumulation))
    return 1.0 - work / world_size / predicted if predicted else 0.0


def steps_per_epoch(n_rows: int, micro: int, micro_per_step: int) -> int:
    return math.ceil(math.ceil(n_rows / micro) / micro_per_step)


def non_padding_fraction(lengths: list[int], steps: list[list[list[int]]]) -> float:
    """Real tokens / tokens computed (each micro-batch is padded to its longest row)."""
    real = padded = 0
    for step in steps:
        for mb in step:
            if mb:
                real += sum(lengths[i] for i in mb)
                padded += len(mb) * max(lengths[i] for i in mb)
    return real / max(1, padded)


def collate(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors; padding continues the position ids and carries no labels."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[b, :n] = torch.as_tensor(r["input_ids"])
        labels[b, :n] = torch.as_tensor(r["labels"])
        pos[b, :n] = torch.as_tensor(r["position_ids"])
        last = int(pos[b, n - 1]) if n else -1
        pos[b, n:] = torch.arange(last + 1, last + 1 + width - n)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def supervised_targets(labels: list[int]) -> int:
    """Tokens that contribute to the loss (labels are shifted by one inside the model)."""
    return sum(t != IGNORE for t in labels[1:])
