"""docs/architecture.md names only modules that exist: every file and folder path, every
``isograd.x.y`` name and every ``module.name`` it writes in backticks resolves in the source tree
(a renamed or removed module, or a function that moved away, fails here)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PKG = ROOT / "src" / "isograd"
DOC = ROOT / "docs" / "architecture.md"
# file kinds the map names that are not Python modules (run outputs, data, pictures)
NOT_MODULES = {"json", "jsonl", "md", "png", "lock", "csv", "txt", "npz", "toml", "sh", "html",
               "safetensors", "bin", "model", "gguf"}
PY_FILES = {p.name for d in (PKG, ROOT / "results", ROOT / "benchmarks", ROOT / "tests")
            for p in d.rglob("*.py")}


def _optional_layers() -> set[str]:
    """The layers the import contract marks as not yet there ("(serve)"): the map may name them."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.search(r'type = "layers".*?layers = \[(.*?)\]', text, re.S)
    return {f"{name}/" for name in re.findall(r"\((\w+)\)", layers.group(1))}


def _tokens() -> list[str]:
    out = []
    for raw in re.findall(r"`([^`\n]+)`", DOC.read_text(encoding="utf-8")):
        t = raw.split("(")[0].strip()
        if t and " " not in t and not any(c in t for c in "<>*=,'\"[]{}"):
            out.append(t)
    return out


def _module_file(name: str) -> Path | None:
    """`name` ("qa/pipeline", "stagefiles", "lm", "cli") as a module file or package."""
    for base in (PKG / name, *(p.parent / p.stem for p in PKG.rglob(f"{Path(name).name}.py"))):
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    return None


def _defines(path: Path, attr: str) -> bool:
    text = path.read_text(encoding="utf-8")
    return bool(re.search(rf"^\s*(def|class)\s+{attr}\b|^\s*{attr}\s*[:=]|\bimport\b.*\b{attr}\b"
                          rf"|^\s+{attr},$", text, re.M))


def _problem(token: str) -> str | None:
    """Why `token` names nothing that exists (None: it resolves or is no module name)."""
    if re.fullmatch(r"isograd(\.\w+)+", token):
        parts = token.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return f"{'.'.join(parts[:i])} has no {attr}"
                obj = getattr(obj, attr)
            return None
        return "no such module"
    if token.endswith("/"):  # a folder: of the package, or of the repository
        if (PKG / token).is_dir() or (ROOT / token).is_dir() or token in _optional_layers():
            return None
        return "no such folder"
    if token.endswith(".py"):
        if "/" in token:
            ok = (PKG / token).is_file() or (ROOT / token).is_file()
        else:
            ok = token in PY_FILES
        return None if ok else "no such file"
    m = re.fullmatch(r"((?:\w+/)*\w+)\.(\w+)", token)
    if m and m.group(2) not in NOT_MODULES:
        module, attr = m.groups()
        path = _module_file(module)
        if path is None:
            # a Python-looking name whose module is not ours (e.g. an attribute of a result)
            return None if "/" not in module and not (PKG / module).exists() else "no such module"
        return None if _defines(path, attr) else f"{path.relative_to(PKG)} defines no {attr}"
    return None


def test_the_map_names_only_modules_that_exist():
    problems = {t: p for t in _tokens() if (p := _problem(t))}
    assert not problems, problems


@pytest.mark.parametrize("token, why", [
    ("qa/stagefiles.py", "no such file"), ("stagefiles.run_stage", "defines no run_stage"),
    ("isograd.distributed", "isograd has no distributed"), ("isograd.qa.pipeline.convert_run", "no convert_run"),
    ("nowhere/", "no such folder"), ("ghostly.py", "no such file"),
])
def test_a_vanished_module_is_caught(token, why):
    assert why in (_problem(token) or "")


def test_every_module_of_the_package_is_on_the_map():
    text = DOC.read_text(encoding="utf-8")
    missing = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")
               and str(p.relative_to(PKG)) not in text and f"`{p.name}`" not in text]
    assert not missing, missing
