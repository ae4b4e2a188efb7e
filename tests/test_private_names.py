"""No module of isograd imports another module's private name (a leading underscore): what
crosses a module boundary is public, documented API."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "isograd"


def private_imports(path: Path) -> list[str]:
    """``from M import _x`` statements of one file (M an isograd module), as "M._x"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            ours = node.level > 0 or (node.module or "").startswith("isograd")
            found += [f"{'.' * node.level}{node.module or ''}.{a.name}" for a in node.names
                      if ours and a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_crosses_a_module():
    bad = {str(p.relative_to(SRC)): hits for p in SRC.rglob("*.py") if (hits := private_imports(p))}
    assert not bad, bad


def test_the_check_sees_relative_and_absolute_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .score import _token_logprobs\nfrom isograd.x import _y, z\n"
                 "from os import _exit\nfrom . import __version__\n")
    assert private_imports(f) == [".score._token_logprobs", "isograd.x._y"]
