"""Generation backends: HF (tiny model), the OpenAI-compatible endpoint (fake local server), Ray Data pool."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest

from loopback import LoopbackServer

from s1ray.models.endpoint import AsyncRate
from s1ray.models.generation import (EndpointConfig, Generation, GenerationConfig, HFGenerator, OpenAIGenerator,
                                     make_generator)

SECRET = "sk-test-DO-NOT-LEAK-9f8e7d"


@pytest.fixture(scope="module")
def hf():
    return make_generator(GenerationConfig(model="tiny:tiny", max_new_tokens=8, batch_size=3))


def test_hf_batched_left_padding_matches_single(hf):
    prompts = [hf.chat_prompt("What is 2+2?"), "short", "a much longer prompt with many more tokens in it"]
    batched = hf.generate(prompts, max_new_tokens=6)
    single = [hf.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.n_tokens == 6 and g.finish_reason == "length" for g in batched)
    assert hf.tokenizer.padding_side == "left"


def test_hf_per_row_limits_and_zero(hf):
    gens = hf.generate(["one", "two", "three", "four"], max_new_tokens=[0, 1, 4, 7])
    assert [g.n_tokens for g in gens] == [0, 1, 4, 7]
    assert gens[0] == Generation("", 0, "length", token_ids=[])
    assert [len(g.token_ids) for g in gens] == [0, 1, 4, 7]


def test_hf_stop_string_cuts_text_and_reports_stop(hf):
    free = hf.generate(["Hello there, how"], max_new_tokens=8)[0]
    assert len(free.text) > 2
    stop = free.text.strip()[:2]  # a string the greedy model is known to produce
    got = hf.generate(["Hello there, how"], max_new_tokens=8, stop=[stop])[0]
    assert got.finish_reason == "stop"
    assert stop not in got.text and free.text.startswith(got.text)
    assert got.n_tokens <= free.n_tokens


def test_hf_stop_token_ids_and_min_new_tokens(hf):
    first = hf.generate(["Hello"], max_new_tokens=3)[0]
    tok_id = first.token_ids[0]
    stopped = hf.generate(["Hello"], max_new_tokens=3, stop_token_ids=[tok_id])[0]
    assert stopped == Generation("", 1, "stop", token_ids=[])  # the stop id counts, is not kept
    masked = hf.generate(["Hello"], max_new_tokens=3, stop_token_ids=[tok_id], min_new_tokens=1)[0]
    assert masked.token_ids[0] != tok_id  # forbidden for the first token only
    per_row = hf.generate(["Hello", "Hello"], max_new_tokens=3, stop_token_ids=[tok_id], min_new_tokens=[0, 1])
    assert per_row[0] == stopped and per_row[1] == masked


def test_hf_token_id_prompts_equal_text_prompts(hf):
    text = hf.chat_prompt("What is 2+2?")
    ids = hf.encode(text)
    a, b = hf.generate([text, ids], max_new_tokens=6)
    assert a == b
    assert hf.tokenizer.decode(a.token_ids) == a.text


def test_hf_sampling_is_seeded():
    cfg = GenerationConfig(model="tiny:tiny", max_new_tokens=6, temperature=1.0, seed=3)
    a = HFGenerator(cfg).generate(["x", "y"])
    b = HFGenerator(cfg).generate(["x", "y"])
    assert [g.text for g in a] == [g.text for g in b]


def test_count_tokens_and_chat_prompt(hf):
    assert hf.count_tokens(["", "hello world"]) == [0, 2]
    p = hf.chat_prompt("Q?", system="S")
    assert p.endswith("<|im_start|>assistant\n") and "Q?" in p and "S" in p


def test_unknown_vllm_reports_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm":
            raise ImportError("no vllm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(RuntimeError, match="s1ray\\[gpu\\]"):
        make_generator(GenerationConfig(backend="vllm", model="tiny:tiny"))


# --- fake OpenAI-compatible server ----------------------------------------------------------

class FakeServer(LoopbackServer):
    """``POST /v1/completions`` that replies with a scripted status sequence, then success."""

    def __init__(self, script: list[int] | None = None, echo_key_in_errors: bool = False):
        self.script = list(script or [])
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.echo_key_in_errors = echo_key_in_errors
        super().__init__(self.reply)

    def reply(self, handler, body):
        with self.lock:
            self.requests.append({"path": handler.path, "auth": handler.headers.get("Authorization"), "body": body})
            self.times.append(time.monotonic())
            status = self.script.pop(0) if self.script else 200
        if status != 200:
            msg = f"error; your key was {handler.headers.get('Authorization')}" if self.echo_key_in_errors else "busy"
            return status, {}, json.dumps({"error": msg}).encode()
        text = "echo:" + body["prompt"][-5:] + " STOP tail"
        return 200, {}, json.dumps({"choices": [{"text": text, "finish_reason": "stop"}],
                                    "usage": {"completion_tokens": 4}}).encode()


def _endpoint_gen(url: str, monkeypatch, **ep) -> OpenAIGenerator:
    monkeypatch.setenv("S1RAY_TEST_KEY", SECRET)
    cfg = GenerationConfig(backend="openai", model="tiny:tiny", max_new_tokens=16, batch_size=4,
                           endpoint=EndpointConfig(base_url=url, model="served-model", api_key_env="S1RAY_TEST_KEY",
                                                   **{"rate_limit_rps": 1000.0, **ep}))
    gen = make_generator(cfg)
    gen.backoff_s = 0.01
    return gen


def test_endpoint_success_stop_and_key_header(monkeypatch):
    with FakeServer() as srv:
        gen = _endpoint_gen(srv.url, monkeypatch)
        out = gen.generate(["prompt-one", "prompt-two"], stop=[" STOP"])
    assert [g.text for g in out] == ["echo:t-one", "echo:t-two"]
    assert all(g.n_tokens == 4 and g.finish_reason == "stop" for g in out)
    assert {r["path"] for r in srv.requests} == {"/v1/completions"}
    assert all(r["auth"] == f"Bearer {SECRET}" for r in srv.requests)
    assert srv.requests[0]["body"]["model"] == "served-model"
    assert srv.requests[0]["body"]["stop"] == [" STOP"]


def test_endpoint_retries_429_and_500(monkeypatch):
    with FakeServer(script=[429, 500, 503]) as srv:
        gen = _endpoint_gen(srv.url, monkeypatch, max_retries=3)
        gen.backoff_s = 0.05
        out = gen.generate(["p"])
    assert out[0].finish_reason == "stop" and out[0].text.startswith("echo:")
    assert len(srv.requests) == 4
    gaps = [b - a for a, b in zip(srv.times, srv.times[1:])]
    # exponential backoff with jitter in [0.5, 1]: waits in [25, 50], [50, 100], [100, 200] ms
    assert gaps[0] >= 0.025 and gaps[2] >= 0.1 and gaps[2] > gaps[0]


def test_endpoint_gives_up_without_leaking_key(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeServer(script=[500] * 10, echo_key_in_errors=True) as srv:
        gen = _endpoint_gen(srv.url, monkeypatch, max_retries=2)
        out = gen.generate(["p"])
    assert len(srv.requests) == 3
    assert out[0].finish_reason == "error" and "gave up after 3 attempts" in out[0].error
    assert "HTTP 500" in out[0].error
    assert SECRET not in out[0].error and "***" in out[0].error
    assert SECRET not in caplog.text and "retrying" in caplog.text
    assert SECRET not in repr(gen.cfg) and SECRET not in repr(vars(gen.cfg.endpoint))


def test_endpoint_client_error_not_retried(monkeypatch):
    with FakeServer(script=[400]) as srv:
        out = _endpoint_gen(srv.url, monkeypatch).generate(["p"])
    assert len(srv.requests) == 1 and out[0].finish_reason == "error" and "HTTP 400" in out[0].error


def test_endpoint_rate_limit(monkeypatch):
    with FakeServer() as srv:
        gen = _endpoint_gen(srv.url, monkeypatch, rate_limit_rps=20.0)
        t0 = time.monotonic()
        gen.generate([f"p{i}" for i in range(6)])
        elapsed = time.monotonic() - t0
    assert len(srv.requests) == 6
    # 6 requests at 20/s need at least 5 intervals, timed where the limiter decides (the client):
    # a lower bound that load can only lengthen. The server's arrival times are not asserted: a
    # loaded machine can deliver requests the limiter spaced out in one burst.
    assert elapsed >= 5 / 20 * 0.95


def test_endpoint_unreachable_is_an_error_not_a_crash(monkeypatch):
    gen = _endpoint_gen("http://127.0.0.1:9/v1", monkeypatch, max_retries=1, timeout_s=2.0)
    out = gen.generate(["p"])
    assert out[0].finish_reason == "error" and "cannot reach" in out[0].error


def test_rate_limiter_spacing():
    lim = AsyncRate(50.0)

    async def five():
        for _ in range(5):
            await lim.acquire()

    t0 = time.monotonic()
    asyncio.run(five())
    assert time.monotonic() - t0 >= 4 / 50 * 0.95


# --- Ray Data actor pool --------------------------------------------------------------------

def test_generate_column_actor_pool_matches_direct(ray_local, hf):
    import ray

    from s1ray.models.batch_llm import generate_column

    prompts = [f"question {i}" for i in range(7)]
    cfg = GenerationConfig(model="tiny:tiny", max_new_tokens=5, batch_size=3, concurrency=1, num_cpus=0.5)
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
    rows = sorted(generate_column(ds, cfg, "prompt", "gen").take_all(), key=lambda r: r["id"])
    direct = make_generator(cfg).generate(prompts)
    assert [r["gen_text"] for r in rows] == [g.text for g in direct]
    assert [r["gen_tokens"] for r in rows] == [5] * 7
    assert {r["gen_finish"] for r in rows} == {"length"}
    assert [r["prompt"] for r in rows] == prompts
    with pytest.raises(Exception, match="column 'nope' not in batch"):
        generate_column(ds, cfg, "nope", "gen").take_all()
