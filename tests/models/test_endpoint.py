"""The one endpoint HTTP client (s1ray/models/endpoint.py), against loopback servers the tests start:
no key to another origin, capped Retry-After, capped bodies, total timeouts, per-row errors, and
no key in what Ray stores for a Ray Data HTTP stage (the worker reads it from its environment)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loopback import LoopbackServer
from pydantic import ValidationError

from s1ray.models import batch_llm as bl
from s1ray.models.endpoint import (RETRY_STATUS, EndpointConfig, check_key_transport, parse_retry_after,
                                   retry_wait)
from s1ray.models.generation import GenerationConfig, make_generator

SECRET = os.environ["S1RAY_TEST_KEY"]  # tests/conftest.py: set before Ray starts, so workers have it too
OK = {"choices": [{"text": "fine", "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}


class Recorder:
    """A second origin: records every request (any method) with its Authorization header."""

    def __init__(self):
        self.seen: list[tuple[str, str, str | None]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                raw = json.dumps({"choices": [{"text": "from the other origin", "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _record

        # "localhost", not 127.0.0.1: another origin (host differs) on this machine
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.httpd.server_address[1]}/v1/completions"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def scripted(reply):
    """A loopback endpoint whose reply to each request is ``reply(prompt, n_seen_before)``."""
    seen: list[str] = []

    def handle(handler, body):
        n = seen.count(body["prompt"])
        seen.append(body["prompt"])
        return reply(body["prompt"], n)
    return LoopbackServer(handle)


def endpoint(url: str, **kw) -> EndpointConfig:
    return EndpointConfig(**{"base_url": url, "api_key_env": "S1RAY_TEST_KEY", "rate_limit_rps": 1000.0,
                             "max_retries": 1, "timeout_s": 10.0, **kw})


def generator(url: str, **kw):
    gen = make_generator(GenerationConfig(backend="openai", model="served", max_new_tokens=8, batch_size=4,
                                          endpoint=endpoint(url, **kw)))
    gen.backoff_s = 0.01
    return gen


def session_complete(ep: EndpointConfig, body: dict) -> dict:
    """One request through the Ray Data HTTP stage's session, called the way Ray calls it."""
    async def go():
        async with bl.EndpointSession(ep, backoff_s=0.01) as session:
            request = session.post("ignored", headers={"Content-Type": "application/json"}, data=json.dumps(body))
            async with await request as response:
                assert response.status == 200  # always: failures are in the record
                return await response.json()
    return asyncio.run(go())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_never_carries_the_key(status):
    with Recorder() as other:
        with scripted(lambda p, n: (status, {"Location": other.url}, b"")) as srv:
            got = generator(srv.url).generate(["p"])[0]
            record = session_complete(endpoint(srv.url), {"model": "m", "prompt": "q", "max_tokens": 4})
    assert other.seen == []  # nothing reached the second origin, with or without a key
    for error in (got.error, record["error"]):
        assert f"HTTP {status}" in error and "not followed" in error and other.url in error
        assert "endpoint.base_url" in error and SECRET not in error
    assert got.finish_reason == "error" and record["text"] is None


def test_retry_after_is_capped(caplog):
    caplog.set_level(logging.WARNING)
    with scripted(lambda p, n: (503, {"Retry-After": "86400"}, b'{"error": "come back tomorrow"}')) as srv:
        got = generator(srv.url, max_retry_wait_s=0.05, max_retries=2).generate(["p"])[0]
    assert got.finish_reason == "error" and "gave up after 3 attempts" in got.error and "HTTP 503" in got.error
    waits = [r.getMessage().rsplit("retrying in ", 1)[1] for r in caplog.records if "retrying in" in r.getMessage()]
    assert waits == ["0.05s", "0.05s"]  # the cap, not a day


def test_retry_policy_and_retry_after_values():
    assert {429, 500, 502, 503, 504, 408} <= RETRY_STATUS and not {400, 401, 403, 404, 301, 302} & RETRY_STATUS
    assert retry_wait(0, 86400.0, 1.0, 60.0) == 60.0 and retry_wait(0, 2.0, 1.0, 60.0) == 2.0
    assert 0.5 <= retry_wait(0, None, 1.0, 60.0) <= 1.0 and 4.0 <= retry_wait(3, None, 1.0, 60.0) <= 8.0
    assert retry_wait(20, None, 1.0, 60.0) == 60.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("-3") == 0.0 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    from email.utils import formatdate

    assert 80 < parse_retry_after(formatdate(time.time() + 100, usegmt=True)) <= 100  # the HTTP-date form


def test_huge_body_is_a_row_error_and_not_read_on():
    def endless(wfile):  # no Content-Length: only counting what arrives can stop it
        for _ in range(10_000):
            wfile.write(b"x" * 65536)

    def reply(prompt, n):
        if prompt == "declared":
            return 200, {}, b"y" * (2 << 20)
        return 200, {}, endless

    with scripted(reply) as srv:
        gen = generator(srv.url, max_response_bytes=1 << 20)
        declared, streamed = gen.generate(["declared", "streamed"])
        record = session_complete(endpoint(srv.url, max_response_bytes=1 << 20), {"prompt": "streamed"})
    for error in (declared.error, streamed.error, record["error"]):
        assert "larger than endpoint.max_response_bytes (1048576 bytes)" in error


def test_timeout_is_total_not_per_read():
    def trickle(wfile):  # a byte every 0.1 s: a per-read timeout of 0.5 s would never fire
        for _ in range(300):
            wfile.write(b" ")
            wfile.flush()
            time.sleep(0.1)

    with scripted(lambda p, n: (200, {}, trickle)) as srv:
        got = generator(srv.url, timeout_s=0.5, max_retries=0).generate(["p"])[0]
    assert got.finish_reason == "error" and "within 0.5 s (endpoint.timeout_s)" in got.error


def test_key_in_clear_text_only_to_loopback(monkeypatch):
    monkeypatch.setenv("S1RAY_TEST_KEY", SECRET)
    for url in ("http://10.1.2.3:8000/v1", "http://api.example.com/v1"):
        with pytest.raises(ValueError, match="unencrypted"):
            generator(url)
        with pytest.raises(ValueError, match="unencrypted"):  # the driver fails before any Ray work
            bl.http_processor_config(GenerationConfig(backend="openai", model="m", endpoint=endpoint(url)))
        check_key_transport(endpoint(url, api_key_env=None), None)  # no key: plain http is the user's call
    for url in ("https://api.example.com/v1", "http://127.0.0.1:8000/v1", "http://localhost:8000/v1",
                "http://[::1]:8000/v1"):
        check_key_transport(endpoint(url), SECRET)
    with pytest.raises(ValidationError, match="http:// or https://"):
        endpoint("ftp://example.com/v1")


def test_key_is_read_in_the_worker_and_never_stored_with_the_stage(monkeypatch):
    """What Ray stores for the HTTP stage (processor config, session factory, the built
    processor's stages) holds the variable's name, never its value."""
    import ray.cloudpickle as cloudpickle

    monkeypatch.setenv("S1RAY_TEST_KEY", SECRET)
    cfg = GenerationConfig(backend="openai", model="served", endpoint=endpoint("https://api.example.com/v1"))
    pc = bl.http_processor_config(cfg)
    processor = bl.build_llm_processor(cfg)
    for obj in (pc, pc.session_factory, processor):
        blob = cloudpickle.dumps(obj)
        assert SECRET.encode() not in blob and b"S1RAY_TEST_KEY" in blob
    assert pc.headers == {}
    # A worker without the variable the driver had: a clear error, not requests without a key.
    monkeypatch.delenv("S1RAY_TEST_KEY")
    with pytest.raises(RuntimeError, match="S1RAY_TEST_KEY .* not in this Ray worker"):
        pc.session_factory()


def test_ray_data_http_stage_per_row_errors(ray_local):
    """On Ray Data: the key reaches the endpoint from the worker's own environment; a redirecting
    row fails alone and nothing reaches the other origin."""
    import pyarrow as pa

    def requests(batch, cfg):  # local functions: pickled by value for the workers
        return [bl.request(cfg, q) for q in batch["q"].to_pylist()]

    def results(batch, gens):
        return batch.append_column("text", pa.array([None if g.error else g.text for g in gens], pa.string())
                                   ).append_column("error", pa.array([g.error for g in gens], pa.string()))

    with Recorder() as other:
        auth: list[str | None] = []

        def handle(handler, body):
            auth.append(handler.headers.get("Authorization"))
            if "redirect" in body["prompt"]:
                return 307, {"Location": other.url}, b""
            return 200, {}, json.dumps(OK).encode()

        with LoopbackServer(handle) as srv:
            cfg = GenerationConfig(backend="openai", model="served", max_new_tokens=4, batch_size=2, num_cpus=0.25,
                                   endpoint=endpoint(srv.url))
            ds = bl.generate_dataset(ray_local.data.from_arrow(pa.table({"q": ["hello", "please redirect"]})),
                                     cfg, requests, results, build_kwargs={"cfg": cfg})
            rows = sorted(ds.take_all(), key=lambda r: r["q"])
    assert other.seen == []
    assert auth == [f"Bearer {SECRET}"] * 2
    assert (rows[0]["text"], rows[0]["error"]) == ("fine", None)
    assert rows[1]["text"] is None and "HTTP 307" in rows[1]["error"] and "not followed" in rows[1]["error"]

