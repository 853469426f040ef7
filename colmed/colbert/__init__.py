"""ColBERTv2 family: the only code that imports colbert-ai (see :mod:`colmed.colbert.adapter`).

Modules:

* :mod:`colmed.colbert.training` — ``ColbertTrainingConfig`` and ``train_colbert``: colmed triplets ->
  a colbert-ai checkpoint (also loadable by RAGatouille and PyLate) + ``manifest.json``.
* :mod:`colmed.indexes.plaid` — ``build_plaid_index`` / ``PlaidIndex``: the ``"colbert"`` kind of
  :func:`colmed.indexes.base.build_index` / :func:`colmed.indexes.base.load_index`.
* :mod:`colmed.colbert.adapter` — every call into colbert-ai, in-process and in its own ``Run`` context.

Example (CLI)::

    colmed train colbert --triplets runs/nfcorpus-triplets --base <all-MiniLM-L6-v2 folder> --out ckpt/
    colmed index --retriever colbert --dataset ../shared/beir/nfcorpus --model ckpt/ --nbits 2 --out idx/
    colmed search --index idx/ --query "statins and breast cancer"
"""
