"""colmed.bi_encoder: dense (single-vector) retrieval models over sentence-transformers.

- :class:`~bi_encoder.encoder.DenseEncoder` encodes queries and documents with the prompts the model's
  authors intend (see :mod:`bi_encoder.prompts`).
- :mod:`bi_encoder.train` fine-tunes on colmed triplets.
"""
