"""ColBERT family: sentence-transformers ``MultiVectorEncoder`` models, trained like the dense family, indexed by PLAID.

Modules:

* :mod:`colmed.colbert.multivector` — start points (a ColBERT checkpoint as is; any other
  sentence-transformers/BERT model as an untrained ColBERT that keeps its token-embedding signal:
  no projection at its hidden size, or a PCA-initialised projection), encoding with the model's own
  conventions, exhaustive MaxSim.
* :mod:`colmed.colbert.training` — ``ColbertTrainingConfig`` and ``train_colbert``: colmed triplets ->
  a MultiVectorEncoder folder + ``manifest.json``, through the sentence-transformers trainer the dense
  family uses (:mod:`colmed.bi_encoder.train`).
* :mod:`colmed.indexes.plaid` — ``build_plaid_index`` / ``PlaidIndex``: the ``"colbert"`` kind of
  :func:`colmed.indexes.base.build_index` / :func:`colmed.indexes.base.load_index`.
* :mod:`colmed.colbert.adapter` — every call into colbert-ai (the PLAID engine), in-process and in its own
  ``Run`` context.

Example (CLI)::

    colmed train colbert --triplets runs/nfcorpus-triplets --base <all-MiniLM-L6-v2 folder> --out ckpt/
    colmed index --retriever colbert --dataset ../shared/beir/nfcorpus --model ckpt/ --nbits 2 --out idx/
    colmed search --index idx/ --query "statins and breast cancer"
"""
