"""Compatibility fixes that let colbert-ai 0.2.22 run on transformers 5, on CPU, in one process.

Only :mod:`colmed.colbert.adapter` uses this module; nothing here edits site-packages. Each fix is either
applied once and idempotently (:func:`apply_compat`) or scoped to one call with a context manager, so that
colbert-ai behaves as upstream outside colmed's calls.

The fixes:

* **transformers 5 weight init.** colbert-ai's ``HF_ColBERT.__init__`` calls ``init_weights()`` where
  transformers 5 needs ``post_init()`` (which records ``all_tied_weights_keys``); loading fails with
  ``'HF_ColBERT' object has no attribute 'all_tied_weights_keys'``. :func:`apply_compat` wraps
  colbert-ai's ``class_factory`` so the class it builds routes its first ``init_weights()`` through
  ``post_init()``.
* **DDP without a process group.** colbert-ai's training loop always wraps the model in
  ``DistributedDataParallel``, which fails on CPU (and in any process without ``torch.distributed``
  initialised). :func:`single_process_ddp` swaps in a pass-through wrapper for the duration of one run.
* **C++ extensions compile once.** colbert-ai compiles its CPU kernels with ``torch.utils.cpp_extension``
  on first use (~2.5 min on 2 cores); :func:`torch_extensions_dir` pins one cache directory.
* **Git metadata.** colbert-ai stamps saved configs with git details of the working directory and
  crashes inside a git repository with no commits or a detached HEAD; :func:`apply_compat` makes that
  stamp best-effort (host, time and command line are still recorded).
* **Double encoding on small corpora.** When the k-means sample is the whole collection (< ~30k passages)
  PLAID encodes every passage twice. :func:`reuse_sample_embeddings` hands the sample's embeddings to the
  indexing pass when it asks for exactly the same passages.

Example:
    >>> from colmed.colbert.compat import torch_extensions_dir
    >>> torch_extensions_dir().name                          # doctest: +SKIP
    'torch_extensions'
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import torch

_APPLIED = False


def torch_extensions_dir() -> Path:
    """Point ``TORCH_EXTENSIONS_DIR`` at one shared cache (unless the user already set it) and return it.

    Compiled kernels are keyed by torch version and source hash inside, so one directory serves all runs.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colmed" / "torch_extensions"
    path = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _needs_post_init() -> bool:
    from transformers import PreTrainedModel

    # transformers 5 computes tied-weight bookkeeping in post_init(); 4.x does not need the fix.
    return hasattr(PreTrainedModel, "get_expanded_tied_weights_keys")


def _fix_hf_colbert_class(cls: type) -> type:
    """Make ``cls.__init__``'s call to ``init_weights()`` run ``post_init()`` first (once per instance)."""
    if cls.__dict__.get("_colmed_compat"):
        return cls
    base_init_weights = cls.init_weights

    def init_weights(self):
        if not self.__dict__.get("_colmed_post_init_started"):
            # post_init() records all_tied_weights_keys etc., then calls init_weights() again (below).
            self.__dict__["_colmed_post_init_started"] = True
            self.post_init()
            return
        base_init_weights(self)

    cls.init_weights = init_weights
    cls._colmed_compat = True
    return cls


def _wrap_class_factory(factory: Callable[[str], type]) -> Callable[[str], type]:
    if getattr(factory, "_colmed_compat", False):
        return factory

    def class_factory(name_or_path):
        return _fix_hf_colbert_class(factory(str(name_or_path)))

    class_factory._colmed_compat = True
    class_factory.__wrapped__ = factory
    return class_factory


def _tolerant_metadata(original: Callable[[], dict]) -> Callable[[], dict]:
    if getattr(original, "_colmed_compat", False):
        return original

    def get_metadata_only():
        try:
            return original()
        except Exception:  # GitPython: no commits yet (ValueError), detached HEAD (TypeError), ...
            import socket
            import sys
            import time

            from colbert.utils.utils import dotdict

            return dotdict(hostname=socket.gethostname(), cmd=" ".join(sys.argv),
                           current_datetime=time.strftime("%b %d, %Y ; %l:%M%p %Z (%z)"))

    get_metadata_only._colmed_compat = True
    return get_metadata_only


def apply_compat() -> None:
    """Apply the process-wide, idempotent fixes: extension cache dir, transformers-5 init, git metadata."""
    global _APPLIED
    torch_extensions_dir()
    if _APPLIED:
        return
    import importlib

    import colbert  # noqa: F401  (utility.* must be imported after colbert: they import each other)

    # Each of these modules imported the function by name and holds its own reference.
    modules = [importlib.import_module(name) for name in (
        "utility.utils.save_metadata", "colbert.data.examples", "colbert.data.ranking",
        "colbert.infra.config.base_config", "colbert.infra.config.core_config")]
    safe = _tolerant_metadata(modules[0].get_metadata_only)
    for module in modules:
        module.get_metadata_only = safe
    if _needs_post_init():
        import colbert.modeling.base_colbert as base_colbert
        import colbert.modeling.hf_colbert as hf_colbert

        wrapped = _wrap_class_factory(hf_colbert.class_factory)
        hf_colbert.class_factory = wrapped
        # base_colbert imported the name directly, so it holds its own reference.
        base_colbert.class_factory = wrapped
    _APPLIED = True


class _SingleProcessWrapper(torch.nn.Module):
    """Stands in for ``DistributedDataParallel`` with one process: forwards to ``.module`` unchanged."""

    def __init__(self, module: torch.nn.Module, *args, **kwargs):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@contextlib.contextmanager
def single_process_ddp() -> Iterator[None]:
    """Within the block, ``torch.nn.parallel.DistributedDataParallel`` is a pass-through wrapper.

    Only done when no process group is initialised: with one there is real DDP to keep.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        yield
        return
    original = torch.nn.parallel.DistributedDataParallel
    torch.nn.parallel.DistributedDataParallel = _SingleProcessWrapper
    try:
        yield
    finally:
        torch.nn.parallel.DistributedDataParallel = original


@contextlib.contextmanager
def reuse_sample_embeddings() -> Iterator[dict[str, int]]:
    """Within the block, encoding the same passage list twice in a row reuses the first result.

    colbert-ai's indexer encodes its k-means sample, then encodes every chunk. On a corpus small enough
    that the sample is the whole collection in one chunk, the two calls receive identical lists, and the
    model is deterministic in inference mode, so the second call can take the first call's tensors. Any
    other call pattern misses the one-entry cache and encodes as usual. Yields counters (``hits``,
    ``encoded_passages``) for the build stats.
    """
    from colbert.indexing.collection_encoder import CollectionEncoder

    original = CollectionEncoder.encode_passages
    cache: dict[str, object] = {}
    counters = {"hits": 0, "encoded_passages": 0}

    def encode_passages(self, passages):
        key = (id(self), len(passages), hash(tuple(passages)))
        if cache.get("key") == key:
            counters["hits"] += 1
            embs, doclens = cache.pop("value")
            cache.clear()
            return embs, doclens
        embs, doclens = original(self, passages)
        counters["encoded_passages"] += len(passages)
        cache.clear()
        if embs is not None:
            cache["key"], cache["value"] = key, (embs, list(doclens))
        return embs, doclens

    CollectionEncoder.encode_passages = encode_passages
    try:
        yield counters
    finally:
        CollectionEncoder.encode_passages = original
        cache.clear()
