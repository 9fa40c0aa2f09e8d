"""The one HTTP client for OpenAI-compatible ``/completions`` endpoints.

Every HTTP path goes through :class:`EndpointClient`: the plain generator (evaluation, the hf
actor pools' judge) and the session Ray Data LLM's HTTP stage opens in its workers (scoring,
traces, judge, domains). So there is one set of rules:

* **The key stays home.** Configs and Ray job data carry only the *name* of the variable
  (``endpoint.api_key_env``); the client reads the key from its own process's environment, in
  the worker that sends the request. Redirects are never followed (a completion POST has no
  business being redirected, and a followed redirect may carry ``Authorization`` to another
  origin): a 3xx reply is that row's error. ``http://`` with a key is refused unless the host is
  loopback (``vllm serve`` on the same machine). The key is scrubbed from every error message.
* **One retry policy**: :data:`RETRY_STATUS`, timeouts and connection errors are retried
  ``max_retries`` times with exponential backoff and jitter, or after the server's
  ``Retry-After``; every wait is capped at ``max_retry_wait_s`` (60 s by default), so a server
  that answers ``Retry-After: 86400`` costs a minute per attempt, not a day.
* **Bounded work per request**: ``timeout_s`` is a total deadline per attempt (connect, send,
  and the whole body; a server that trickles bytes cannot hold a row forever), and a reply
  body over ``max_response_bytes`` is that row's error, read no further.
* **Every failure is a per-row error record**, never an exception that fails the job.

Built on aiohttp (installed with Ray; Ray Data's HTTP stage is itself aiohttp-based). The
retry loop is s1ray's own: tenacity is not installed, and the ``openai`` SDK's client follows
redirects, has per-read (not total) timeouts and no body limit, and cannot be Ray Data's
``session_factory``.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import os
import random
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import field_validator

from s1ray.config import StrictModel

log = logging.getLogger(__name__)

# Retried statuses (with timeouts and connection errors); every other non-200 is the row's error.
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointConfig(StrictModel):
    """An OpenAI-compatible ``/v1/completions`` server (a hosted model or ``vllm serve``)."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1 (http:// with a key only to a loopback host)
    model: str | None = None  # model name sent to the server; default: GenerationConfig.model
    api_key_env: str | None = "OPENAI_API_KEY"  # the key is read from this variable where requests are sent
    rate_limit_rps: float = 5.0  # requests per second, across all threads of one generator
    max_retries: int = 5  # on RETRY_STATUS, timeouts and connection errors
    timeout_s: float = 120.0  # total per attempt: connect, send, and read the whole reply
    max_retry_wait_s: float = 60.0  # cap on every wait between attempts, Retry-After included
    max_response_bytes: int = 8 << 20  # a longer reply body is the row's error

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, e.g. https://api.example.com/v1 "
                             f"(got {value!r})")
        return value


def completions_url(ep: EndpointConfig) -> str:
    return ep.base_url.rstrip("/") + "/completions"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_key_transport(ep: EndpointConfig, key: str | None) -> None:
    """Refuse to send a key in clear text off this machine."""
    parts = urlsplit(ep.base_url)
    if key and parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"endpoint.base_url {ep.base_url!r} is plain http:// to {parts.hostname}, so the API key in "
            f"${ep.api_key_env} would cross the network unencrypted: use https://, or a loopback host "
            f"(127.0.0.1, localhost), or set endpoint.api_key_env: null for a server without keys")


_WARNED: set[tuple[str, str]] = set()


def read_key(ep: EndpointConfig, *, required: bool = False) -> str | None:
    """The API key from this process's environment (``required``: missing is an error, not a warning)."""
    key = os.environ.get(ep.api_key_env) if ep.api_key_env else None
    if ep.api_key_env and not key:
        if required:
            raise RuntimeError(
                f"environment variable {ep.api_key_env} (endpoint.api_key_env) is set where the job was started "
                f"but not in this Ray worker (host {os.uname().nodename}): keys are read where requests are "
                f"sent, never shipped with the job; set it on every node (cluster.yaml env files, a Kubernetes "
                f"secretKeyRef)")
        if (ep.api_key_env, ep.base_url) not in _WARNED:  # once per process, not per batch
            _WARNED.add((ep.api_key_env, ep.base_url))
            log.warning("environment variable %s is not set; calling %s without an API key", ep.api_key_env,
                        ep.base_url)
    check_key_transport(ep, key)
    return key


def retry_wait(attempt: int, retry_after: float | None, backoff_s: float, cap_s: float) -> float:
    """Seconds before retry number ``attempt + 1``: the server's Retry-After, else exponential
    backoff with jitter in [0.5, 1]; never more than ``cap_s``."""
    wait = retry_after if retry_after is not None else backoff_s * 2 ** attempt * (0.5 + random.random() / 2)
    return max(0.0, min(cap_s, wait))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class AsyncRate:
    """At most ``rps`` request starts per second in this process (evenly spaced slots). No await
    between reading and moving the next slot, so concurrent tasks of one loop never share a slot."""

    def __init__(self, rps: float):
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self.next_slot = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class _Failure(Exception):
    """One attempt failed; ``retry`` says whether another attempt may help."""

    def __init__(self, reason: str, retry: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.retry, self.retry_after = retry, retry_after


def normalize(data: Any, url: str) -> dict[str, Any]:
    """An OpenAI ``/completions`` reply as one flat, fixed-shape record (Ray keeps the reply as a
    nested Arrow struct; replies of different shapes could not share a block)."""
    out = {"text": None, "finish_reason": "", "completion_tokens": -1, "error": ""}
    try:
        if isinstance(data, dict) and data.get("error"):
            raise ValueError(str(data["error"])[:300])
        choice = data["choices"][0]
        if not isinstance(choice.get("text"), str):
            raise ValueError("no text in choices[0]")
    except ValueError as e:
        return {**out, "error": f"endpoint error from {url}: {e}"}
    except (KeyError, IndexError, TypeError, AttributeError):
        return {**out, "error": f"malformed reply from {url}: {str(data)[:200]}"}
    n = (data.get("usage") or {}).get("completion_tokens")
    return {**out, "text": choice["text"], "finish_reason": str(choice.get("finish_reason") or ""),
            "completion_tokens": -1 if not isinstance(n, (int, float)) else int(n)}


def error_record(reason: str) -> dict[str, Any]:
    return {"text": None, "finish_reason": "", "completion_tokens": -1, "error": reason}


class EndpointClient:
    """``async with EndpointClient(ep) as c: record = await c.complete(body)``.

    ``record`` is :func:`normalize`'s shape: the completion, or ``error`` with the reason. The
    key is read here, in the process that sends the requests (``key_required``: its absence is
    an error, for workers of a job whose driver had it).
    """

    def __init__(self, ep: EndpointConfig, *, rate: AsyncRate | None = None, backoff_s: float = 1.0,
                 key_required: bool = False):
        self.ep, self.url = ep, completions_url(ep)
        self.rate = rate or AsyncRate(ep.rate_limit_rps)
        self.backoff_s = backoff_s
        self._key = read_key(ep, required=key_required)
        self._session: Any = None

    async def __aenter__(self) -> "EndpointClient":
        import aiohttp

        # trust_env=False: no proxy from the environment sees the key; auto_decompress stays on, and
        # the size limit applies to the decompressed body.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ep.timeout_s),
                                              trust_env=False)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._session.close()

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def complete(self, body: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """POST ``body`` (a dict is sent as JSON) with the retry policy; never raises for HTTP trouble."""
        data = json.dumps(body) if isinstance(body, dict) else body
        last = ""
        for attempt in range(self.ep.max_retries + 1):
            await self.rate.acquire()
            try:
                reply = await asyncio.wait_for(self._attempt(data), self.ep.timeout_s)
                reply["error"] = self.scrub(reply["error"])
                return reply
            except asyncio.TimeoutError:
                failure = _Failure(f"no complete reply from {self.url} within {self.ep.timeout_s:g} s "
                                   f"(endpoint.timeout_s)", retry=True)
            except _Failure as e:
                failure = e
            except Exception as e:  # aiohttp.ClientError, OSError, ...: the connection failed
                failure = _Failure(f"cannot reach {self.url}: {type(e).__name__}: {e}", retry=True)
            last = self.scrub(str(failure))
            if not failure.retry:
                return error_record(last)
            if attempt < self.ep.max_retries:
                wait = retry_wait(attempt, failure.retry_after, self.backoff_s, self.ep.max_retry_wait_s)
                log.warning("endpoint attempt %d/%d failed (%s); retrying in %.2fs", attempt + 1,
                            self.ep.max_retries + 1, last[:160], wait)
                await asyncio.sleep(wait)
        return error_record(f"gave up after {self.ep.max_retries + 1} attempts: {last}")

    async def _attempt(self, data: str | bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        async with self._session.post(self.url, data=data, headers=headers, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                target = urljoin(self.url, resp.headers.get("Location", ""))
                raise _Failure(f"HTTP {resp.status} from {self.url}: redirect to {target!r} not followed (the API "
                               f"key must not travel with it); set endpoint.base_url to the server's own address",
                               retry=False)
            body = await self._read(resp)
            if resp.status != 200:
                text = body[:300].decode("utf-8", "replace")
                raise _Failure(f"HTTP {resp.status} from {self.url}: {text}", retry=resp.status in RETRY_STATUS,
                               retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        try:
            return normalize(json.loads(body), self.url)
        except ValueError:
            raise _Failure(f"non-JSON reply from {self.url}: {body[:200].decode('utf-8', 'replace')}",
                           retry=False) from None

    async def _read(self, resp: Any) -> bytes:
        limit = self.ep.max_response_bytes
        too_big = _Failure(f"reply from {self.url} is larger than endpoint.max_response_bytes ({limit} bytes); "
                           "not read further", retry=False)
        if resp.content_length is not None and resp.content_length > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)
