"""One namespace and layers that only look down.

The folders ``bi_encoder/``, ``data_gen/``, ``indexes/`` and ``eval/`` install as ``colmed.*``; nothing else
lands at the top of site-packages. Every module belongs to one layer and imports (at module level or
inside a function) only its own layer or lower ones.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder in the repository -> the package it installs as
FOLDERS = {"colmed": "colmed", "bi_encoder": "colmed.bi_encoder", "data_gen": "colmed.data_gen",
           "indexes": "colmed.indexes", "eval": "colmed.eval"}

# longest matching prefix decides a module's layer (group)
LAYERS: list[tuple[str, str]] = [
    ("colmed.core", "core"),
    ("colmed.data", "data"),
    ("colmed.bi_encoder.encoder", "models"),
    ("colmed.bi_encoder.prompts", "models"),
    ("colmed.colbert.adapter", "models"),
    ("colmed.colbert", "models"),
    ("colmed.indexes", "retrieval"),
    ("colmed.bi_encoder", "training"),
    ("colmed.colbert.training", "training"),
    ("colmed.data_gen", "generation"),
    ("colmed.eval", "evaluation"),
    ("colmed.benchmark", "orchestration"),
    ("colmed.study", "orchestration"),
    ("colmed.stages", "orchestration"),
    ("colmed.study_report", "orchestration"),
    ("colmed.demo", "orchestration"),
    ("colmed.api", "api"),
    ("colmed", "api"),
    ("colmed.cli", "cli"),
    ("colmed.commands", "cli"),
    ("colmed.serve", "cli"),
    ("colmed.integrations", "cli"),
]
# what each layer may import besides itself. Evaluation is "runs in, numbers out": data only, no
# models, indexes or trainers. Training and generation are siblings and never import each other.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "retrieval": {"core", "data", "models"},
    "training": {"core", "data", "models", "retrieval"},
    "generation": {"core", "data", "models", "retrieval"},
    "evaluation": {"core", "data"},
    "orchestration": {"core", "data", "models", "retrieval", "training", "generation", "evaluation"},
    "api": {"core", "data", "models", "retrieval", "training", "generation", "evaluation", "orchestration"},
    "cli": {"core", "data", "models", "retrieval", "training", "generation", "evaluation", "orchestration", "api"},
}


def layer_of(module: str) -> str:
    return max((p for p in LAYERS if module == p[0] or module.startswith(p[0] + ".")), key=lambda p: len(p[0]))[1]


def colmed_modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, function-local ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            # `from colmed import api` imports the submodule colmed.api
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in MODULES]
    return found


MODULES = colmed_modules()


def test_every_module_imports_only_its_own_layer_or_lower():
    violations = []
    for module, path in sorted(MODULES.items()):
        group = layer_of(module)
        for line, target in imports_of(module, path):
            if target != "colmed" and not target.startswith("colmed."):
                continue
            t_group = layer_of(target)
            if t_group != group and t_group not in ALLOWED[group]:
                violations.append(f"{path.relative_to(ROOT)}:{line}: {module} ({group}) imports {target} ({t_group})")
    assert not violations, "\n".join(violations)


def test_layer_check_catches_an_upward_import():
    # The rules themselves must be able to fail: each of these imports is refused.
    assert layer_of("colmed.indexes.dense") not in ALLOWED[layer_of("colmed.eval.evaluation")]
    assert layer_of("colmed.data.runs") not in ALLOWED[layer_of("colmed.core.io")]
    assert layer_of("colmed.bi_encoder.train") not in ALLOWED[layer_of("colmed.data_gen.pipeline")]
    assert layer_of("colmed.cli") not in ALLOWED[layer_of("colmed.benchmark.cache")]
    assert set(ALLOWED) == {g for _, g in LAYERS}


def test_only_the_adapter_imports_colbert_ai():
    importers = sorted(m for m, p in MODULES.items()
                       if any(t == "colbert" or t.startswith("colbert.") for _, t in imports_of(m, p)))
    assert importers == ["colmed.colbert.adapter"]


def test_bare_folder_names_do_not_import():
    code = ("import importlib\n"
            "for name in ('eval', 'indexes', 'data_gen', 'bi_encoder'):\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as e:\n"
            "        assert 'colmed.' + name in str(e), e\n"
            "    else:\n"
            "        raise SystemExit(f'import {name} worked')\n"
            "import colmed.eval, colmed.indexes, colmed.data_gen, colmed.bi_encoder\n")
    # run from the repository root, where the folders sit on sys.path: the worst case
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_installs_nothing_but_colmed(tmp_path):
    # build from a copy: setuptools leaves build/ and egg-info beside the sources it builds
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel offline here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("colmed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"colmed", next(t for t in top if t.endswith(".dist-info"))}, sorted(top)
    # every module of the source tree ships (a package missing from setup.cfg would only work editable)
    missing = sorted(m for m, path in MODULES.items()
                     if m.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py") not in names)
    assert not missing, f"not in the wheel: {missing}"
    for expected in ("colmed/eval/evaluation.py", "colmed/indexes/bm25.py", "colmed/data_gen/pipeline.py",
                     "colmed/bi_encoder/train.py", "colmed/eval/data/published.yaml",
                     "colmed/data_gen/prompts/medembed.yaml", "colmed/bi_encoder/presets/medembed.yaml",
                     "colmed/data/sample_medical/corpus.jsonl", "colmed/data/sample_medical/qrels/test.tsv"):
        assert expected in names, expected
