"""What a benchmark runs: retriever specs (``[name=]kind[:target]``) and the :class:`BenchmarkConfig`.

Example:
    >>> spec = RetrieverSpec.parse("minilm=dense:sentence-transformers/all-MiniLM-L6-v2")
    >>> spec.name, spec.kind, spec.target
    ('minilm', 'dense', 'sentence-transformers/all-MiniLM-L6-v2')
    >>> RetrieverSpec.parse("colbert:ckpt/colbertv2.0").name
    'colbert:colbertv2.0'
    >>> BenchmarkConfig(retrievers=["bm25", "lexical=bm25"], out="b").retriever_specs()[1].name
    'lexical'
    >>> RetrieverSpec.parse("hybrid=rrf:bm25+minilm").components
    ['bm25', 'minilm']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmed.benchmark.cache import content_hash
from colmed.core.errors import InputError

KINDS = ("bm25", "dense", "colbert", "index", "rrf")
REPORT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class RetrieverSpec:
    """One retriever of a benchmark: a family (``kind``), its model or index, and build options."""

    name: str
    kind: str
    target: str | None = None  # model (dense/colbert: hub name or local path), index dir (index), A+B (rrf)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def components(self) -> list[str]:
        """An ``rrf`` retriever's fused retrievers (names of others in the same benchmark)."""
        return [c.strip() for c in (self.target or "").split("+") if c.strip()] if self.kind == "rrf" else []

    @classmethod
    def parse(cls, text: str | dict) -> "RetrieverSpec":
        """From ``[name=]kind[:target]`` or a config mapping ``{name, kind, target|model, options}``."""
        if isinstance(text, dict):
            d = dict(text)
            target = d.pop("target", None) or d.pop("model", None) or d.pop("index", None)
            kind = d.pop("kind", None)
            spec = cls.parse(f"{kind}:{target}" if target else str(kind))
            spec.name = d.pop("name", None) or spec.name
            spec.options = dict(d.pop("options", {}) or {}, **d)
            return spec
        raw = text.strip()
        name = ""
        head, sep, rest = raw.partition("=")
        if sep and ":" not in head and "/" not in head:
            name, raw = head.strip(), rest.strip()
        kind, _, target = raw.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise InputError(f"unknown retriever {text!r}: expected bm25, dense:<model>, colbert:<checkpoint>, "
                             f"index:<dir> or rrf:<A>+<B>", field="retriever")
        if kind != "bm25" and not target:
            raise InputError(f"retriever {text!r} needs a target after ':' (a model, checkpoint or index dir)",
                             field="retriever")
        if not name and kind == "rrf":
            name = f"rrf:{target.strip()}"
        if not name:
            stem = Path(target.rstrip("/")).name if target else ""
            name = kind if kind == "bm25" else f"{kind}:{stem}"
        return cls(name, kind, target or None)

    def index_manifest(self):
        """The manifest of a prebuilt index (``index:`` retrievers)."""
        from colmed.indexes.base import IndexManifest

        return IndexManifest.read(self.target)

    def identity(self) -> dict:
        """What decides this retriever's results: kind, model (with a content hash when local), options.

        A local model is hashed on every call, so a model retrained into the same folder is a new identity.
        """
        ident: dict[str, Any] = {"kind": self.kind, "options": self.options}
        if self.kind == "rrf":  # reciprocal rank fusion (ranx, k=60) of the components' runs, computed per benchmark
            ident.update(components=self.components)
        elif self.kind == "index":
            m = self.index_manifest()
            ident.update(index=str(Path(self.target).resolve()), index_kind=m.kind, model=m.model,
                         index_settings=m.settings, index_created=m.created,
                         query_prompt=m.query_prompt, document_prompt=m.document_prompt)
        elif self.target:
            ident.update(model=self.target, model_hash=content_hash(self.target))
        return ident


@dataclass
class BenchmarkConfig:
    """Everything a benchmark run depends on; loadable from YAML (:meth:`from_yaml`), overridable by CLI flags."""

    retrievers: list[Any] = field(default_factory=list)  # "[name=]kind[:target]" strings or mappings
    suite: str = "medical"
    datasets: list[str] = field(default_factory=list)  # overrides the suite: registered names or folders
    data_dir: str | None = None
    split: str = "test"
    out: str = "benchmark"
    cache_dir: str | None = None  # default <out>/cache; content-keyed, so benchmarks and studies may share one
    baseline: str | None = None  # retriever name; default: the first retriever
    # "A:B" pairs tested beside the baseline tests (A minus B; Holm-corrected across the pairs of a dataset),
    # e.g. a trained model against its own base
    comparisons: list[str] = field(default_factory=list)
    k: int = 100
    metrics: list[str] = field(default_factory=lambda: list(REPORT_METRICS))
    stat_test: str = "student"
    max_p: float = 0.05
    confidence: float = 0.95
    bootstrap_resamples: int = 2000
    check_published: bool = False
    tolerance: float | None = None  # default: the data file's stated tolerance
    index_type: str = "flat"
    batch_size: int = 32
    device: str | None = None
    backend: str | None = None  # dense/colbert retrievers' encoder engine (torch, openvino) unless one sets its own
    quantize: str | None = None  # with backend openvino: int8 (None: fp32)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "BenchmarkConfig":
        """The config in YAML file ``path`` (:func:`colmed.core.config.from_yaml`), with the given overrides;
        an override of ``None`` or an empty list (a flag not given) leaves the file's value."""
        from colmed.core.config import from_yaml

        given = {k: v for k, v in overrides.items() if v is not None and v != () and v != []}
        return from_yaml(cls, path, given)

    def validate(self) -> "BenchmarkConfig":
        """Refuse settings that cannot work (one line naming the field), before any dataset is read."""
        for name in ("k", "batch_size", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}", field=name)
        for name in ("confidence", "max_p"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"must be between 0 and 1, got {getattr(self, name)}", field=name)
        from colmed.eval.compare import check_metrics

        check_metrics(self.metrics)
        return self

    def retriever_specs(self) -> list[RetrieverSpec]:
        specs = [RetrieverSpec.parse(r) for r in self.retrievers]
        if self.backend or self.quantize:  # joins each dense retriever's options, hence its identity and cache key
            from colmed.bi_encoder.encoder import check_backend

            backend, quantize = check_backend(self.backend, self.quantize)
            for spec in specs:
                if spec.kind in ("dense", "colbert") and (backend, quantize) != ("torch", None):  # torch keeps its runs
                    spec.options.setdefault("backend", backend)
                    spec.options.setdefault("quantize", quantize)
        if not specs:
            raise InputError("no retrievers: give at least one --retriever", field="retriever")
        names = [s.name for s in specs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise InputError(f"two retrievers are named {dup!r}; name them with NAME=kind:target", field="retriever")
        for spec in specs:
            if spec.kind == "rrf":
                fused = spec.components
                plain = [s.name for s in specs if s.kind != "rrf"]
                if len(fused) < 2 or len(set(fused)) < len(fused) or not set(fused) <= set(plain):
                    raise InputError(f"retriever {spec.name!r} fuses {'+'.join(fused) or 'nothing'}: name two or more "
                                     f"other retrievers of this benchmark ({', '.join(plain)})", field="retriever")
        if self.baseline and self.baseline not in names:
            raise InputError(f"baseline {self.baseline!r} is not one of the retrievers ({', '.join(names)})",
                             field="baseline")
        self.comparison_pairs(names)
        return specs

    def retriever_names(self) -> list[str]:
        return [RetrieverSpec.parse(r).name for r in self.retrievers]

    def comparison_pairs(self, names: list[str]) -> list[tuple[str, str]]:
        """``comparisons`` as (A, B) pairs of retriever names, each checked."""
        pairs = []
        for c in map(str, self.comparisons):
            # Names may hold a colon themselves (colbert:colbertv2.0): the one split into two names wins.
            splits = [(c[:i], c[i + 1:]) for i, ch in enumerate(c) if ch == ":"]
            found = [(a, b) for a, b in splits if a in names and b in names and a != b]
            if len(found) != 1:
                raise InputError(f"comparison {c!r} must be A:B, two different retrievers of "
                                 f"{', '.join(names)}", field="comparisons")
            pairs.append(found[0])
        return pairs
