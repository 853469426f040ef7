"""Every docstring example in the installed ``colmed`` package runs, and so does the README's Python example.

Modules are imported by their installed dotted names (``colmed.eval.evaluation``, not ``eval.evaluation``):
the top-level folders bi_encoder/, data_gen/, indexes/ and eval/ install as ``colmed.*`` and refuse a bare
import, which pytest's own ``--doctest-modules`` (importing by file path) would attempt.
"""

from __future__ import annotations

import configparser
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Import names of packages only setup.cfg's extras install (vllm, ray, gguf, serve, langchain, llamaindex).
# A module whose import fails for lack of one of these is skipped; any other import failure fails its test.
OPTIONAL_PACKAGES = {"vllm", "ray", "gguf", "llama_cpp", "fastapi", "uvicorn", "langchain", "langchain_core",
                     "llama_index"}

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _installed_packages() -> list[str]:
    """The package names setup.cfg installs under its own names (``colmed`` and the mapped folders)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = cfg.get("options", "package_dir", fallback="colmed = colmed")
    return [line.split("=")[0].strip() for line in mapping.strip().splitlines() if "=" in line]


def _module_names() -> list[str]:
    names: set[str] = set()
    for package in _installed_packages():
        names.add(package)
        # walk_packages imports subpackages to recurse; a broken one is reported by its own test below.
        path = importlib.import_module(package).__path__
        names.update(info.name for info in pkgutil.walk_packages(path, package + ".", onerror=lambda _: None))
    return sorted(names)


MODULES = _module_names()


def _import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        # The missing optional package may sit behind a friendlier ImportError ("pip install colmed[serve]").
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] in OPTIONAL_PACKAGES:
                pytest.skip(f"{name} needs the optional package {cause.name}")
            cause = cause.__cause__ or cause.__context__
        raise


def test_every_installed_folder_is_walked():
    # Guards the walk itself: an empty or partial module list would make the doctests below pass vacuously.
    for package in ("colmed.core", "colmed.data", "colmed.bi_encoder", "colmed.data_gen",
                    "colmed.indexes", "colmed.eval"):
        assert any(m.startswith(package + ".") for m in MODULES), package


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str):
    module = _import_or_skip(module_name)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples in {module_name} failed (output above)"


def test_readme_python_api_example():
    failed, attempted = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=OPTIONFLAGS,
                                         report=True, verbose=False)
    assert attempted > 0, "README.md lost its Python API example (>>> lines)"
    assert failed == 0, f"{failed} of {attempted} README.md examples failed (output above)"
