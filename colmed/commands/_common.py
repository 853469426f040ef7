"""Helpers shared by CLI commands (kept import-light)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Silence library chatter that buries the CLI's own output (numba casts, HF advisories)."""
    warnings.filterwarnings("ignore", message=".*unsafe cast.*")
    try:
        from numba.core.errors import NumbaTypeSafetyWarning

        warnings.filterwarnings("ignore", category=NumbaTypeSafetyWarning)
    except ImportError:
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
