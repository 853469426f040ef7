"""Query/document prompts per model family, as the models' authors intend them.

Order of precedence when encoding: explicit prompts > the model's own ``prompts`` in its
sentence-transformers config (``config_sentence_transformers.json``) > this table > none.

Example:
    >>> resolve_prompts("BAAI/bge-base-en-v1.5")
    ('Represent this sentence for searching relevant passages: ', '')
    >>> resolve_prompts("sentence-transformers/all-MiniLM-L6-v2")
    ('', '')
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# (pattern on the model name, query prompt, document prompt); first match wins.
FAMILY_PROMPTS: list[tuple[str, str, str]] = [
    # BGE v1.5 English: query instruction for short-query -> passage retrieval (FlagEmbedding README).
    (r"bge-(small|base|large)-en(-v1\.5)?$", "Represent this sentence for searching relevant passages: ", ""),
    # MedEmbed is fine-tuned from BGE v1.5 and keeps its query instruction.
    (r"medembed", "Represent this sentence for searching relevant passages: ", ""),
    # E5 (v1/v2, non-instruct): "query: " / "passage: " (intfloat model cards).
    (r"(^|/)(multilingual-)?e5-(small|base|large)(-v2)?$", "query: ", "passage: "),
    # nomic-embed-text: task prefixes (nomic model card).
    (r"nomic-embed-text", "search_query: ", "search_document: "),
    # GTE, all-MiniLM, all-mpnet and most sentence-transformers models: no prompt.
]


def model_config_prompts(model_name_or_path: str) -> tuple[str, str] | None:
    """Prompts stored in a local model folder's sentence-transformers config, if any."""
    cfg = Path(model_name_or_path) / "config_sentence_transformers.json"
    if not cfg.is_file():
        return None
    prompts = json.loads(cfg.read_text(encoding="utf-8")).get("prompts") or {}
    if not prompts:
        return None
    query = prompts.get("query", "")
    document = prompts.get("document", prompts.get("passage", prompts.get("corpus", "")))
    return query, document


def resolve_prompts(model_name_or_path: str, query_prompt: str | None = None,
                    document_prompt: str | None = None) -> tuple[str, str]:
    """The (query, document) prompts to use for a model; explicit arguments win."""
    found = model_config_prompts(model_name_or_path)
    if found is None:
        name = str(model_name_or_path).rstrip("/").lower()
        found = next(((q, d) for pat, q, d in FAMILY_PROMPTS if re.search(pat, name)), ("", ""))
    return (found[0] if query_prompt is None else query_prompt,
            found[1] if document_prompt is None else document_prompt)
