"""Budget forcing (s1): control how long a model thinks, on any generation backend.

Thinking starts after ``think_start``. To cap thinking at N tokens, generation stops there and
the end-of-thinking delimiter (plus, optionally, "Final Answer:") is appended before the answer
is generated. To extend thinking, an attempt to end it (the model writes an end-of-thinking
string) is suppressed and "Wait" appended instead, K times or until a minimum budget.

The loop is the multi-call stop-and-continue of s1's own vLLM code, so every backend gives
the same result: each call continues all unfinished rows with their own remaining budget and
stops at an end-of-thinking string (matched as a token id when it is one special token).
``extend="suppress"`` instead masks the end of thinking until the minimum (``min_new_tokens``:
vLLM's ``min_tokens``, a logits processor on HF).

No round ever asks for more than the model's context holds (``generator.context_length``; None:
no clamp): thinking may grow only up to ``context - prompt - answer reserve`` (the reserve: the
longest end-of-thinking prefix plus ``answer_reserve_tokens``), and the answer gets at most what
is left. A row that fills its context is cut there like a budget cut ("Final Answer:" and an
answer follow) and says so in ``stop_reason="context"``; vLLM would refuse to continue it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

from s1ray.evaluate.config import BudgetForcingConfig


@dataclass
class ForcedResult:
    prompt: str  # everything before the thinking phase (chat prompt)
    generation: str  # everything after the prompt: think_start + thinking + delimiter + answer
    thinking: str  # the thinking text, including any appended "Wait"s
    thinking_tokens: int  # tokens the model generated while thinking (appended Waits not counted)
    answer: str  # the answer phase's text (after the delimiter and "Final Answer:")
    answer_tokens: int
    forced_stop: bool  # thinking was cut: at the budget or at the model's context
    continuations: int  # times an end of thinking was suppressed ("Wait" appended)
    finish_reason: str  # of the answer phase: stop | length | error
    error: str | None = None
    thinking_ids: list[int] | None = None  # the thinking as token ids (token-id backends)
    # Why thinking ended: "end" (the model ended it), "budget" (cut at the cap), "context" (cut
    # because only the answer's reserve was left of the model's context), "error".
    stop_reason: str = ""
    gave_up: str | None = None  # rejection sampling kept an unfitting draw: max_samples | max_rounds | context

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("thinking_ids")  # the text is stored; the ids only carry the thinking to the answer phase
        return out


def _per_row(value: int | None | Sequence[int | None], n: int) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"got {len(values)} per-row values for {n} prompts")
    return values


def _uses_ids(generator: Any) -> bool:
    return bool(getattr(generator, "accepts_token_ids", False))


def _context(generator: Any) -> int | None:
    return getattr(generator, "context_length", None)


def _lengths(generator: Any, prompts: list[Any]) -> list[int]:
    """Tokens of each prompt: token-id prompts by length, text by the generator's tokenizer."""
    return generator.prompt_lengths(prompts)


def answer_reserve(generator: Any, bf: BudgetForcingConfig) -> int:
    """Context tokens kept free after the thinking: the longest prefix that ends it (a forced
    stop's "\n" + delimiter + "Final Answer:") and ``answer_reserve_tokens`` for the answer."""
    longest = "\n" + bf.answer_start + (bf.final_answer or "")
    n = len(generator.encode(longest)) if _uses_ids(generator) else generator.count_tokens([longest])[0]
    return n + bf.answer_floor


def thinking_room(generator: Any, bf: BudgetForcingConfig) -> int | None:
    """The longest sequence (prompt + thinking, in tokens) a row may reach before it must answer;
    None when the generator's context is unknown."""
    context = _context(generator)
    if context is None:
        return None
    reserve = answer_reserve(generator, bf)
    if reserve >= context:
        raise ValueError(f"budget_forcing.answer_reserve_tokens ({bf.answer_floor}"
                         f"{'' if bf.answer_reserve_tokens is not None else ', default: max_answer_tokens'}) and the "
                         f"end-of-thinking prefix ({reserve - bf.answer_floor} tokens) leave no room to think in the "
                         f"model's context of {context} tokens; set budget_forcing.answer_reserve_tokens smaller")
    return context - reserve


def think_phase(generator: Any, prompts: list[str], bf: BudgetForcingConfig,
                max_thinking_tokens: int | None | Sequence[int | None] = None,
                num_waits: int | Sequence[int] | None = None,
                min_thinking_tokens: int | None | Sequence[int | None] = None) -> list[ForcedResult]:
    """The thinking phase alone (capped, extended); answer fields are left empty.

    On backends that take token ids (hf, vllm) every round continues from the ids generated so
    far, as s1 does: the text is never decoded and re-tokenised between rounds, which could
    change both the token count and the continuation. Text endpoints continue from the text.
    """
    n = len(prompts)
    cap = [c if c is not None else generator.cfg.max_new_tokens for c in _per_row(max_thinking_tokens, n)]
    waits_allowed = _per_row(bf.num_waits if num_waits is None else num_waits, n)
    min_tok = _per_row(bf.min_thinking_tokens if min_thinking_tokens is None else min_thinking_tokens, n)
    suppress = bf.extend == "suppress"
    if suppress and not getattr(generator, "supports_min_tokens", False):
        raise ValueError("budget_forcing.extend='suppress' needs a backend that masks tokens (hf or vllm); "
                         "use extend='wait' with the openai backend")
    ids = _uses_ids(generator)
    if ids:
        base: list[Any] = [generator.encode(p + bf.think_start) for p in prompts]
        wait: Any = generator.encode(bf.wait)
        thinking: list[Any] = [[] for _ in range(n)]
    else:
        base, wait, thinking = [p + bf.think_start for p in prompts], bf.wait, [""] * n
    used = [0] * n
    waits = [0] * n
    reason = ["end"] * n
    errors: list[str | None] = [None] * n
    room = thinking_room(generator, bf)
    active = list(range(n))

    while active:
        limits = [cap[i] - used[i] for i in active]
        by_context = [False] * len(active)
        if room is not None:  # never past the context, less the answer's reserve
            left = [room - k for k in _lengths(generator, [base[i] + thinking[i] for i in active])]
            by_context = [r < lim for r, lim in zip(left, limits)]
            limits = [min(lim, r) for lim, r in zip(limits, left)]
        full = [i for i, lim in zip(active, limits) if lim <= 0]  # a prompt that alone fills it
        for i in full:
            reason[i] = "context"
        keep = [k for k, lim in enumerate(limits) if lim > 0]
        active, limits, by_context = [active[k] for k in keep], [limits[k] for k in keep], [by_context[k] for k in keep]
        if not active:
            break
        kwargs: dict[str, Any] = {}
        if suppress:  # the end of thinking is masked until the minimum (vLLM's min_tokens)
            kwargs["min_new_tokens"] = [max(0, (min_tok[i] or 0) - used[i]) for i in active]
        gens = generator.generate([base[i] + thinking[i] for i in active], max_new_tokens=limits,
                                  stop=bf.end_of_thinking, **kwargs)
        still = []
        for i, g, ctx_cut in zip(active, gens, by_context):
            thinking[i] += g.token_ids if ids else g.text
            used[i] += g.n_tokens
            if g.finish_reason == "error":
                errors[i], reason[i] = g.error, "error"
                continue
            if used[i] >= cap[i]:
                reason[i] = "budget" if g.finish_reason == "length" else "end"
                continue
            if g.finish_reason == "length":
                if ctx_cut or g.n_tokens == 0:  # the context is full (0 tokens: a backend at its own limit)
                    reason[i] = "context"
                else:  # cannot happen below the cap and the context; kept for safety
                    still.append(i)
                continue
            # The model tried to end its thinking.
            want_more = waits[i] < (waits_allowed[i] or 0)
            below_min = min_tok[i] is not None and used[i] < min_tok[i] and waits[i] < bf.max_extensions
            if want_more or below_min:
                if room is not None and _lengths(generator, [base[i] + thinking[i] + wait])[0] >= room:
                    reason[i] = "context"  # no room to think on after a "Wait": cut here instead
                    continue
                thinking[i] += wait
                waits[i] += 1
                still.append(i)
        active = still

    text = [generator.tokenizer.decode(t, skip_special_tokens=False) for t in thinking] if ids else thinking
    return [ForcedResult(prompt=prompts[i], generation="", thinking=text[i], thinking_tokens=used[i],
                         answer="", answer_tokens=0, forced_stop=reason[i] in ("budget", "context"),
                         continuations=waits[i], finish_reason="", error=errors[i],
                         thinking_ids=thinking[i] if ids else None, stop_reason=reason[i])
            for i in range(n)]


def answer_prefix(r: ForcedResult, bf: BudgetForcingConfig) -> str:
    """What ends the thinking (s1): the delimiter, plus "Final Answer:" only when the budget cut the
    thinking (a newline first unless the thinking ends with one); ``final_answer_on='always'`` adds
    it to every row."""
    if bf.final_answer and (r.forced_stop or bf.final_answer_on == "always"):
        newline = "" if (not r.forced_stop or r.thinking.endswith("\n")) else "\n"
        return newline + bf.answer_start + bf.final_answer
    return bf.answer_start


def answer_phase(generator: Any, results: list[ForcedResult], bf: BudgetForcingConfig) -> list[ForcedResult]:
    """End the thinking (:func:`answer_prefix`) and generate the answer; always runs."""
    prefixes = [answer_prefix(r, bf) for r in results]
    if _uses_ids(generator):
        prompts: list[Any] = [generator.encode(r.prompt + bf.think_start) + r.thinking_ids + generator.encode(p)
                              for r, p in zip(results, prefixes)]
    else:
        prompts = [r.prompt + bf.think_start + r.thinking + p for r, p in zip(results, prefixes)]
    limits: int | list[int] = bf.max_answer_tokens
    context = _context(generator)
    if context is not None:  # what the context has left; thinking kept the reserve free for it
        limits = [max(0, min(bf.max_answer_tokens, context - k)) for k in _lengths(generator, prompts)]
        for r, lim in zip(results, limits):
            if lim == 0:
                r.error = r.error or (f"the prompt and thinking fill the model's context of {context} tokens: "
                                      "no room for an answer")
    answers = generator.generate(prompts, max_new_tokens=limits, stop=bf.answer_stop)
    for r, p, a in zip(results, prefixes, answers):
        r.generation = bf.think_start + r.thinking + p + a.text
        r.answer, r.answer_tokens, r.finish_reason = a.text, a.n_tokens, a.finish_reason
        r.error = r.error or a.error
    return results


def budget_force(generator: Any, prompts: list[str], bf: BudgetForcingConfig,
                 max_thinking_tokens: int | None | Sequence[int | None] = None,
                 num_waits: int | Sequence[int] | None = None,
                 min_thinking_tokens: int | None | Sequence[int | None] = None) -> list[ForcedResult]:
    """Two-phase generation for ``prompts`` (chat prompts, assistant turn open).

    ``max_thinking_tokens`` caps thinking (per row or for all; None = the generator's
    ``max_new_tokens``); ``num_waits`` and ``min_thinking_tokens`` default to the config's.
    """
    thought = think_phase(generator, prompts, bf, max_thinking_tokens, num_waits, min_thinking_tokens)
    return answer_phase(generator, thought, bf)


@contextmanager
def sampling(generator: Any, temperature: float) -> Iterator[None]:
    """Temporarily sample at ``temperature`` (rejection sampling needs diverse draws)."""
    old = generator.cfg
    generator.cfg = old.model_copy(update={"temperature": temperature})
    try:
        yield
    finally:
        generator.cfg = old


def rejection_sample(generator: Any, prompts: list[str], bf: BudgetForcingConfig, budgets: Sequence[int],
                     max_samples: int | None, temperature: float, hard_cap: Sequence[int],
                     max_rounds: int = 100) -> tuple[list[ForcedResult], list[int]]:
    """s1's rejection-sampling baseline: draw until the thinking fits the budget.

    A draw fits when the model ended its thinking itself within the budget (a draw cut by the
    context does not fit, however short). ``max_samples=None`` is s1's rule: every row is drawn
    again until all fit (draws are cut at budget + 1 tokens, since a longer one is rejected
    anyway), for at most ``max_rounds`` rounds. With a number, a row stops after that many draws.
    A row that never fits keeps its last draw (generated up to ``hard_cap``, or the context) and
    says why in ``gave_up``: ``max_samples``, ``max_rounds``, or ``context`` (its prompt leaves no
    room to think at all). Returns the sample per prompt and the draw counts.
    """
    if max_rounds < 1:
        raise ValueError(f"rejection.max_rounds must be at least 1, got {max_rounds}")
    n = len(prompts)
    if max_samples is None:
        hard_cap = [b + 1 for b in budgets]
    chosen: list[ForcedResult | None] = [None] * n
    gave_up: list[str | None] = [None] * n
    draws = [0] * n
    todo = list(range(n))
    rounds = 0
    with sampling(generator, temperature):
        while todo and rounds < max_rounds:
            out = think_phase(generator, [prompts[i] for i in todo], bf, [hard_cap[i] for i in todo],
                              num_waits=0, min_thinking_tokens=0)
            rounds += 1
            still = []
            for i, r in zip(todo, out):
                draws[i] += 1
                chosen[i] = r
                if r.error is not None or (r.stop_reason == "end" and r.thinking_tokens <= budgets[i]):
                    continue  # accepted (an error is kept: drawing again would not fix it)
                if r.stop_reason == "context" and r.thinking_tokens == 0:
                    gave_up[i] = "context"
                elif max_samples is not None and draws[i] >= max_samples:
                    gave_up[i] = "max_samples"
                else:
                    still.append(i)
            todo = still
        for i in todo:
            gave_up[i] = "max_rounds"
        results = answer_phase(generator, [c for c in chosen if c is not None], bf)
    for r, why in zip(results, gave_up):
        r.gave_up = why
    return results, draws
