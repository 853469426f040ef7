"""Helpers shared by CLI commands (kept import-light): output verbosity and library chatter.

Verbosity is ``quiet`` (results and errors only), ``normal`` (status lines; progress bars only on a
terminal) or ``verbose`` (progress bars even in log files, library info messages). It travels in the
``COLMED_VERBOSITY`` environment variable so that the stages ``colmed study`` runs as subprocesses
inherit it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSITIES = ("quiet", "normal", "verbose")
# Wide enough that rich tables (benchmark: several datasets with intervals) never wrap in a log file.
LOG_CONSOLE_WIDTH = 250
_HANDLER_NAME = "colmed-cli"


def set_verbosity(verbosity: str | None) -> None:
    """Record the ``--quiet``/``--verbose`` choice for this process and its children (None: keep)."""
    if verbosity is not None:
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity must be one of {VERBOSITIES}, not {verbosity!r}")
        os.environ["COLMED_VERBOSITY"] = verbosity


def verbosity() -> str:
    value = os.environ.get("COLMED_VERBOSITY", "normal")
    return value if value in VERBOSITIES else "normal"


def progress_wanted() -> bool:
    """Progress bars: always with --verbose, never with --quiet, otherwise only on a terminal."""
    v = verbosity()
    return v == "verbose" or (v == "normal" and sys.stderr.isatty())


def info(message: str) -> None:
    """A status line on stderr (silent with --quiet), so stdout keeps only results."""
    if verbosity() != "quiet":
        print(message, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Silence library chatter that buries the CLI's own output; apply the chosen verbosity."""
    warnings.filterwarnings("ignore", message=".*unsafe cast.*")
    try:
        from numba.core.errors import NumbaTypeSafetyWarning

        warnings.filterwarnings("ignore", category=NumbaTypeSafetyWarning)
    except ImportError:
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    verbose = verbosity() == "verbose"
    level = logging.INFO if verbose else logging.WARNING
    # bm25s sets its own logger to DEBUG on import ("Building index from IDs objects"), so the
    # level is enforced on the handler, which every record passes whatever its logger's level.
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(level)
    root.setLevel(level)
    logging.getLogger("bm25s").setLevel(level)
    if not verbose:
        # Read by transformers / huggingface_hub at import (both are imported after this, lazily).
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        if "transformers" in sys.modules:  # already imported: its env variables were read
            sys.modules["transformers"].logging.set_verbosity_error()
            sys.modules["transformers"].logging.disable_progress_bar()
    if not progress_wanted():
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
    _set_progress_bars(progress_wanted())
    if not sys.stdout.isatty():
        # rich (and click) read COLUMNS; without it a redirected console is 80 columns and tables wrap.
        os.environ.setdefault("COLUMNS", str(LOG_CONSOLE_WIDTH))


def _set_progress_bars(enabled: bool) -> None:
    """Turn every tqdm bar on or off, including those a library asks for explicitly.

    bm25s, sentence-transformers and transformers pass ``disable=`` themselves, which overrides
    ``TQDM_DISABLE``; every tqdm class (auto, notebook, huggingface_hub's) runs ``tqdm.std.tqdm.__init__``.
    """
    try:
        import tqdm.std
    except ImportError:
        return
    cls = tqdm.std.tqdm
    original = getattr(cls, "_colmed_original_init", None)
    if enabled:
        if original is not None:
            cls.__init__ = original
            del cls._colmed_original_init
        return
    if original is not None:
        return  # already off

    original = cls.__init__

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    cls._colmed_original_init = original
    cls.__init__ = __init__
