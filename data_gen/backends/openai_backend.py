"""Any OpenAI-compatible chat endpoint (``vllm serve``, llama.cpp server, TGI, hosted APIs) over httpx.

Bounded concurrency (a thread pool of ``concurrency`` requests), a per-request timeout, and retries
with exponential backoff on timeouts, connection errors, 429 and 5xx; when the last attempt fails too (or the
endpoint answers 401/403/404) :class:`EndpointError` stops the run, leaving it resumable. Structured output is asked for
with ``response_format={"type": "json_schema", ...}`` (vLLM, OpenAI, llama.cpp's ``llama-server``); a server that
answers that ``response_format`` is not supported gets llama-cpp-python's ``{"type": "json_object", "schema": ...}``
instead (``python -m llama_cpp.server``), then no ``response_format`` at all (``json_schema_mode="auto"``, the
default; or fix one of ``json_schema``, ``json_object``, ``off``). The API key comes from the environment.

Example (not run as a doctest: it needs a running OpenAI-compatible server;
``tests/test_data_gen_llm.py`` starts a scripted one on 127.0.0.1):
    >>> backend = OpenAIBackend("http://localhost:8000/v1", "Qwen/Qwen2.5-7B-Instruct")   # doctest: +SKIP
    >>> backend.generate([[{"role": "user", "content": "Say hi"}]])[0].text                # doctest: +SKIP
    'Hi!'
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from colmed.core.errors import ColmedError
from colmed.data_gen.backends.base import Completion

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Answers that no retry or other prompt will change: the endpoint, model or key is wrong.
FATAL_STATUS = {401, 403, 404}
# Ways to ask for schema-shaped JSON, most widely supported first; "auto" steps down this list.
SCHEMA_MODES = ("json_schema", "json_object", "off")


def response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` a request carries to ask for JSON matching ``schema`` in ``mode``.

    Example:
        >>> response_format("json_object", {"type": "object"})
        {'type': 'json_object', 'schema': {'type': 'object'}}
        >>> response_format("off", {"type": "object"}) is None
        True
    """
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "queries", "schema": schema}}
    if mode == "json_object":  # llama-cpp-python's server (its own dialect, also read by llama-server)
        return {"type": "json_object", "schema": schema}
    return None


class EndpointError(ColmedError):
    """The endpoint could not be reached or refused every attempt: the run stops (resumable), it does not
    count the batch's notes as rejected outputs."""


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` for each conversation, ``concurrency`` at a time."""

    name = "openai"
    supports_prefill = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, max_attempts: int = 4, backoff: float = 1.0, json_schema_mode: str = "auto"):
        import threading

        import httpx

        json_schema_mode = {"on": "json_schema"}.get(json_schema_mode, json_schema_mode)
        if json_schema_mode not in ("auto", *SCHEMA_MODES):
            raise ValueError(f"json_schema_mode must be auto or one of {', '.join(SCHEMA_MODES)}, got {json_schema_mode!r}")

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.json_schema_mode = json_schema_mode
        # the way of asking for JSON in use: "auto" starts at the first and steps down when the server refuses it
        self.schema_mode = SCHEMA_MODES[0] if json_schema_mode == "auto" else json_schema_mode
        self._mode_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers,
                                   limits=httpx.Limits(max_connections=self.concurrency))

    def _step_down(self, refused: str) -> bool:
        """After the server refused ``response_format`` in mode ``refused``: use the next mode (True), or
        False when the mode is fixed or none is left."""
        if self.json_schema_mode != "auto":
            return False
        with self._mode_lock:
            if self.schema_mode == refused and refused != SCHEMA_MODES[-1]:
                self.schema_mode = SCHEMA_MODES[SCHEMA_MODES.index(refused) + 1]
            return self.schema_mode != refused

    def _request(self, body: dict[str, Any], json_schema: dict[str, Any] | None = None) -> Completion:
        import httpx

        error = "no attempt"
        attempt = 0
        while attempt < self.max_attempts:
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
            mode = self.schema_mode
            fmt = response_format(mode, json_schema) if json_schema is not None else None
            try:
                resp = self.client.post(self.url, json={**body, "response_format": fmt} if fmt else body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                error = f"{type(e).__name__}: {e}"
                attempt += 1
                continue
            if fmt and resp.status_code in (400, 422, 500) and "response_format" in resp.text \
                    and self._step_down(mode):
                continue  # the server names response_format as the problem: ask the next way, not a retry
            if resp.status_code in RETRY_STATUS:
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                attempt += 1
                continue
            if resp.status_code in FATAL_STATUS:
                raise EndpointError(f"{self.url}: HTTP {resp.status_code} ({resp.text[:120].strip()}); check "
                                    "--base-url, --model and the API key")
            if resp.status_code != 200:
                return Completion(None, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            try:
                data = resp.json()
                text = data["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as e:
                return Completion(None, error=f"unexpected response ({type(e).__name__}): {resp.text[:200]}")
            usage = data.get("usage") or {}
            return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        raise EndpointError(f"{self.url}: gave up after {self.max_attempts} attempts ({error}); the finished "
                            "batches are kept: rerun the same command to resume")

    def generate(self, conversations, *, max_new_tokens: int = 384, temperature: float = 0.7, seed: int = 0,
                 json_schema=None, assistant_prefix: str = "") -> list[Completion]:
        def body(conv):
            return {"model": self.model, "messages": conv, "max_tokens": max_new_tokens, "temperature": temperature,
                    "seed": seed}

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c: self._request(body(c), json_schema), conversations))

    def close(self) -> None:
        self.client.close()
