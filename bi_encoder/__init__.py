"""colmed.bi_encoder: dense (single-vector) retrieval models over sentence-transformers.

- :class:`~colmed.bi_encoder.encoder.DenseEncoder` encodes queries and documents with the prompts the model's
  authors intend (see :mod:`colmed.bi_encoder.prompts`).
- :mod:`colmed.bi_encoder.train` fine-tunes on colmed triplets.
"""

if __name__ != "colmed.bi_encoder":  # the folder installs as colmed.bi_encoder; a bare `import bi_encoder` would shadow other packages
    raise ImportError("import colmed.bi_encoder, not bi_encoder: colmed installs one top-level package")

