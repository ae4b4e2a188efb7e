"""The README's quick start runs as written, and the README shows the two commands."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_quick_start_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", _section(README.read_text(), "Quick start"), re.S)
    assert blocks, "the Quick start section has no python block"
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    u = namespace["u"]
    assert u.p.shape == (5,) and (u.total >= u.aleatoric).all()


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
