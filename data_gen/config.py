"""The one configuration object of a ``colmed generate`` run.

Defaults live in :class:`GenerateConfig`; a YAML file overrides them and CLI flags override the YAML.
The config (minus fields that do not change the output, such as ``overwrite``) is fingerprinted so a
resumed run can refuse to mix checkpoints written under different settings.

Example:
    >>> cfg = GenerateConfig(notes="notes.jsonl", out="runs/triplets", generator="inverse_cloze")
    >>> cfg.replace(num_negatives=3).num_negatives
    3
    >>> len(cfg.fingerprint()) == 64
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from colmed.core.errors import InputError

GENERATORS = ("inverse_cloze", "cropping", "llm")
BACKENDS = ("transformers", "llamacpp", "openai", "vllm")
MINERS = ("bm25", "dense", "none")

# Fields that do not change what a run writes: excluded from the resume fingerprint. (``batch_notes`` is
# fingerprinted: generation parts are numbered by batch, so another batch size would lose or repeat notes.)
# Where the model is served (base_url, api_key_env) is not what it writes: a restarted server resumes.
_NOT_FINGERPRINTED = {"out", "overwrite", "progress", "concurrency", "device", "request_timeout", "shard",
                      "base_url", "api_key_env", "threads"}

# Settings read only after generation (filters, dedup, mining, splits, export): a resume that changes only
# these reuses the finished generation parts and redoes the rest.
# (min/max_query_words are not: the LLM-free generators pick their query sentence or span with them.)
LATE_SETTINGS = {"min_relevance", "require_evidence_in_note", "dedup",
                 "round_trip_k", "miner", "dense_model", "dense_backend", "dense_quantize", "num_negatives", "range_min", "range_max",
                 "relative_margin", "absolute_margin", "max_score", "min_score", "sampling", "exclude_same_note",
                 "teacher", "dev_fraction"}

# Settings added after runs were made, left out of the fingerprints at their defaults: a run made before
# they existed still resumes, and its shards still merge with newer ones.
_OMITTED_AT_DEFAULT = {"dense_backend": "torch", "dense_quantize": None}

# Query parameters of an endpoint URL that carry a secret (``?api-key=...``, ``?token=...``).
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|auth|sig|credential)", re.IGNORECASE)


def endpoint_credentials(url: str) -> str | None:
    """What in ``url`` is a credential (user:password@ or a key-like query parameter), or None.

    Example:
        >>> endpoint_credentials("http://127.0.0.1:8000/v1"), endpoint_credentials("http://u:p@host/v1")
        (None, 'user:password@')
        >>> endpoint_credentials("https://host/v1?api-key=abc")
        "query parameter 'api-key'"
    """
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        return "user:password@"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(name):
            return f"query parameter {name!r}"
    return None


@dataclass
class GenerateConfig:
    """Every setting of a generation run. See ``colmed generate --help`` for the flag of each field."""

    # source notes
    notes: str = ""
    out: str = ""
    text_field: str = "text"
    id_field: str = "id"
    title_field: str = "title"
    hub_split: str = "train"
    num_notes: int | None = None
    seed: int = 13
    chunk_words: int = 200          # ~256 word-pieces: the trainers' default max length
    min_chunk_words: int = 20

    # query generation
    generator: str = "inverse_cloze"
    queries_per_note: int = 1       # per passage (chunk) of a note
    keep_sentence_prob: float = 0.1  # inverse cloze: ICT keeps the query sentence in the positive 10% of the time
    crop_min_ratio: float = 0.1     # independent cropping (Contriever): span length as a fraction of the passage
    crop_max_ratio: float = 0.5
    backend: str = "transformers"
    model: str | None = None
    gguf_file: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    prompts: str | None = None      # YAML template; None = bundled MedEmbed-style mix
    max_new_tokens: int = 384
    temperature: float = 0.7
    max_retries: int = 2
    concurrency: int = 8
    request_timeout: float = 120.0
    tensor_parallel_size: int = 1
    device: str | None = None
    threads: int | None = None      # llamacpp: CPU threads (None = every core this process may use)

    # filters
    min_query_words: int = 2
    max_query_words: int = 64
    min_relevance: float | None = 3.0   # LLM queries only; LLM-free generators carry no relevance
    require_evidence_in_note: bool = True
    dedup: bool = True
    round_trip_k: int | None = None     # Promptagator-style consistency: source passage within top-k

    # hard negatives
    miner: str = "bm25"
    dense_model: str | None = None
    dense_backend: str = "torch"        # the dense miner's encoder engine: torch or openvino (colmed[openvino])
    dense_quantize: str | None = None   # openvino only: int8 or bf16 (None: fp32)
    num_negatives: int = 5
    range_min: int = 0
    range_max: int = 50
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"
    exclude_same_note: bool = True
    teacher: str | None = None      # cross-encoder for distillation scores

    # outputs
    dev_fraction: float = 0.1
    shard: str | None = None        # "i/n"
    batch_notes: int = 64           # checkpoint granularity
    overwrite: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from colmed.core.config import check_types

        check_types(self)  # a config built in Python is held to the same types as one read from YAML
        # one spelling of fp32 (``--dense-quantize none``, YAML ``fp32``, unset), so the fingerprint agrees
        if isinstance(self.dense_quantize, str) and self.dense_quantize.strip().lower() in ("", "none", "fp32"):
            self.dense_quantize = None

    def replace(self, **changes) -> "GenerateConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "GenerateConfig":
        """Raise :class:`InputError` for a setting that cannot work, before any work starts."""
        def bad(msg: str, name: str):
            raise InputError(msg, field=name)

        if not self.notes:
            bad("required: a JSONL file, a BEIR folder or a hub dataset name", "notes")
        if not self.out:
            bad("required: an output directory", "out")
        if self.generator not in GENERATORS:
            bad(f"unknown generator {self.generator!r}; choose from {', '.join(GENERATORS)}", "generator")
        if self.generator == "llm":
            if self.backend not in BACKENDS:
                bad(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}", "backend")
            if not self.model:
                bad("the llm generator needs --model (a local path or hub name)", "model")
            if self.backend == "llamacpp":
                self.gguf_path()
            if self.backend == "openai":
                if not self.base_url:
                    # never a hosted default: notes would leave the machine whenever an API key is set
                    bad("the openai backend needs --base-url (the endpoint that may receive the notes, "
                        "e.g. http://localhost:8000/v1)", "base_url")
                secret = endpoint_credentials(self.base_url)
                if secret:
                    bad(f"holds a credential ({secret}), which would be written to manifest.json and state.json; "
                        f"put the key in the environment variable named by --api-key-env ({self.api_key_env})",
                        "base_url")
                if not self.base_url.startswith(("http://", "https://")):
                    bad(f"expected an http:// or https:// URL, got {self.base_url!r}", "base_url")
        if self.threads is not None and self.threads < 1:
            bad(f"must be at least 1 (or unset for every core), got {self.threads}", "threads")
        for name in ("batch_notes", "concurrency", "max_new_tokens"):
            if getattr(self, name) < 1:
                bad(f"must be at least 1, got {getattr(self, name)}", name)
        if self.num_notes is not None and self.num_notes < 1:
            bad(f"must be at least 1 (or unset for every note), got {self.num_notes}", "num_notes")
        if self.num_negatives < 0:
            bad(f"must be 0 or more, got {self.num_negatives}", "num_negatives")
        if self.max_retries < 0:
            bad(f"must be 0 or more, got {self.max_retries}", "max_retries")
        if self.miner not in MINERS:
            bad(f"unknown miner {self.miner!r}; choose from {', '.join(MINERS)}", "miner")
        if self.miner == "dense" and not self.dense_model:
            bad("the dense miner needs --dense-model", "dense_model")
        self._check_dense_backend()
        if self.sampling not in ("top", "random"):
            bad("must be 'top' or 'random'", "sampling")
        if not 0 <= self.dev_fraction < 1:
            bad("must be in [0, 1)", "dev_fraction")
        if self.range_min < 0 or (self.miner != "none" and self.num_negatives > self.range_max - self.range_min):
            bad(f"cannot mine {self.num_negatives} negatives from ranks [{self.range_min}, {self.range_max})",
                "range_max")
        if self.queries_per_note < 1:
            bad("must be at least 1", "queries_per_note")
        if self.chunk_words < self.min_chunk_words:
            bad("must be at least min_chunk_words", "chunk_words")
        if not 0 < self.crop_min_ratio <= self.crop_max_ratio <= 1:
            bad("need 0 < crop_min_ratio <= crop_max_ratio <= 1", "crop_min_ratio")
        if self.shard is not None:
            parse_shard(self.shard)
        return self

    def _check_dense_backend(self) -> None:
        """The dense miner's encoder backend, as indexing and search check theirs (and its extra installed).

        Example:
            >>> GenerateConfig(notes="n.jsonl", out="o", dense_quantize="int8").validate()
            Traceback (most recent call last):
            ...
            colmed.core.errors.InputError: field 'dense_quantize': applies to the dense miner; add --miner dense
        """
        from colmed.bi_encoder.encoder import check_backend

        if self.dense_backend == "torch" and self.dense_quantize is None:
            return
        if self.miner != "dense":
            name = "dense_quantize" if self.dense_quantize is not None else "dense_backend"
            raise InputError("applies to the dense miner; add --miner dense", field=name)
        try:
            check_backend(self.dense_backend, self.dense_quantize)
        except InputError as e:
            # the encoder's own fields and flags are backend/quantize; this config calls them dense_*
            message = str(e).split(": ", 1)[1] if e.field else str(e)
            raise InputError(message.replace("--backend", "--dense-backend"),
                             field={"backend": "dense_backend", "quantize": "dense_quantize"}.get(e.field, e.field)
                             ) from None

    def gguf_path(self) -> Path | None:
        """The local GGUF file the llm generator runs, or None (a hub model, a served one, no GGUF).

        ``llamacpp`` runs only a local file: ``model`` is the ``.gguf`` file itself, or a folder holding
        ``gguf_file``; anything else is an :class:`InputError` (it is never looked up on a hub).
        ``transformers`` reads ``model``/``gguf_file`` when that file is on disk.
        """
        if self.generator != "llm" or not self.model:
            return None
        model = Path(self.model)
        if self.backend == "llamacpp":
            from colmed.data_gen.backends.llamacpp_backend import check_gguf_file

            if model.is_dir():
                if not self.gguf_file:
                    found = sorted(p.name for p in model.glob("*.gguf"))
                    raise InputError("is a folder: name the GGUF file in it with --gguf-file"
                                     + (f" (found: {', '.join(found[:5])})" if found else " (it holds no .gguf file)"),
                                     path=model, field="model")
                return check_gguf_file(model / self.gguf_file, field="gguf_file")
            if self.gguf_file:
                raise InputError("--gguf-file names a file inside a --model folder, but --model is a file",
                                 path=model, field="gguf_file")
            return check_gguf_file(model, field="model")
        if self.backend == "transformers" and self.gguf_file and (model / self.gguf_file).is_file():
            return model / self.gguf_file
        return None

    def fingerprint(self) -> str:
        """sha256 of the settings that determine the output (resume safety)."""
        d = {k: v for k, v in self._fingerprinted().items() if k not in _NOT_FINGERPRINTED}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def generation_fingerprint(self) -> str:
        """sha256 of the settings that shape the generation parts (all but :data:`LATE_SETTINGS`)."""
        d = {k: v for k, v in self._fingerprinted().items() if k not in _NOT_FINGERPRINTED | LATE_SETTINGS}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def _fingerprinted(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if not (k in _OMITTED_AT_DEFAULT and v == _OMITTED_AT_DEFAULT[k])}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Any = (), **flags: Any) -> "GenerateConfig":
        """Defaults <- YAML file <- ``overrides`` (``"key=value"`` strings or a mapping) <- ``flags``.

        ``None`` flags are ignored (unset CLI flags). Unknown keys and values of the wrong type fail here,
        before anything runs, with one line naming the file and the field (:mod:`colmed.core.config`).
        """
        from colmed.core import config as typed
        from colmed.core.io import read_yaml_mapping

        data = {str(k).replace("-", "_"): v for k, v in read_yaml_mapping(path).items()}
        data = typed.apply_overrides(data, overrides)
        data = typed.apply_overrides(data, {k: v for k, v in flags.items() if v is not None})
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> "GenerateConfig":
        """Build from a mapping of settings, each checked against its field's type."""
        from colmed.core.config import from_dict

        return from_dict(cls, data, path=source)


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
    """
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise InputError(f"expected i/n (e.g. 0/4), got {spec!r}", field="shard") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"need 0 <= i < n, got {spec!r}", field="shard")
    return i, n
