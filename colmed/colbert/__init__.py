"""ColBERTv2 family: the only code that imports colbert-ai (see :mod:`colmed.colbert.adapter`)."""
