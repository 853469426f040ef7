"""Any OpenAI-compatible chat endpoint (``vllm serve``, llama.cpp server, TGI, hosted APIs) over httpx.

Bounded concurrency (a thread pool of ``concurrency`` requests), a per-request timeout, and retries
with exponential backoff on timeouts, connection errors, 429 and 5xx; when the last attempt fails too (or the
endpoint answers 401/403/404) :class:`EndpointError` stops the run, leaving it resumable. Structured output is asked for
with ``response_format={"type": "json_schema", ...}`` (vLLM and OpenAI support it); servers that
reject it can be used with ``json_schema_mode="off"``. The API key comes from the environment.

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


class EndpointError(ColmedError):
    """The endpoint could not be reached or refused every attempt: the run stops (resumable), it does not
    count the batch's notes as rejected outputs."""


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` for each conversation, ``concurrency`` at a time."""

    name = "openai"
    supports_prefill = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, max_attempts: int = 4, backoff: float = 1.0, json_schema_mode: str = "on"):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.json_schema_mode = json_schema_mode
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers,
                                   limits=httpx.Limits(max_connections=self.concurrency))

    def _request(self, body: dict[str, Any]) -> Completion:
        import httpx

        error = "no attempt"
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
            try:
                resp = self.client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                error = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in RETRY_STATUS:
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
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
            b = {"model": self.model, "messages": conv, "max_tokens": max_new_tokens, "temperature": temperature,
                 "seed": seed}
            if json_schema is not None and self.json_schema_mode == "on":
                b["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "queries", "schema": json_schema}}
            return b

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c: self._request(body(c)), conversations))

    def close(self) -> None:
        self.client.close()
