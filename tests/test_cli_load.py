"""The load flags of `isograd qa` / `isograd score`: help lists every value, bad values exit 2
with one line naming the flag, and good ones reach load_model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from isograd.cli import app
from isograd.lm.models import AttnImplementation, DeviceMap, DType
from isograd.lm.options import LOAD
from tests.lm.tiny_lm import save_tiny


def test_help_names_every_value():
    for text, enum in ((LOAD["dtype"].help, DType), (LOAD["attn_implementation"].help,
                                                      AttnImplementation),
                       (LOAD["device_map"].help, DeviceMap)):
        assert all(m.value in text for m in enum), text
    for command in ("qa", "score"):
        out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
        for flag in ("--dtype", "--device", "--device-map", "--revision",
                     "--attn-implementation", "--trust-remote-code"):
            assert flag in out, (command, flag)


@pytest.mark.parametrize("flags, flag", [
    (["--dtype", "fp8"], "--dtype"), (["--device", "gpu0"], "--device"),
    (["--device-map", "everywhere"], "--device-map"), (["--device-map", "{oops"], "--device-map"),
    (["--attn-implementation", "fast"], "--attn-implementation"),
])
@pytest.mark.parametrize("command", ["qa", "score"])
def test_bad_values_exit_2_naming_the_flag(tmp_path, command, flags, flag):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "Q: 2+2? A:", "answer": " 4"}\n')
    out = tmp_path / "out"
    args = (["qa", "--dataset", "triviaqa"] if command == "qa" else ["score", "--input", str(inp)])
    res = CliRunner().invoke(app, args + ["--out", str(out)] + flags)
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}:"), res.output
    assert not out.exists()


def _spy_load(monkeypatch) -> dict:
    """Record the options isograd.lm.load_model is called with (and the loaded dtypes)."""
    import isograd.lm

    seen, real = {}, isograd.lm.load_model

    def spy(name, **kwargs):
        seen.update(kwargs)
        loaded = real(name, **kwargs)
        seen["dtypes"] = {p.dtype for p in loaded[0].parameters()}
        return loaded

    monkeypatch.setattr(isograd.lm, "load_model", spy)
    return seen


def test_qa_passes_the_flags_to_load_model(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "ckpt", dtype=torch.bfloat16)
    seen = _spy_load(monkeypatch)
    res = CliRunner().invoke(app, [
        "qa", "--dataset", "truthfulqa-gen", "--limit", "1", "--methods", "none", "--quiet",
        "--max-new-tokens", "2", "--out", str(tmp_path / "run"), "--model", str(folder),
        "--dtype", "bf16", "--device-map", "auto", "--attn-implementation", "sdpa"])
    if res.exit_code == 2 and "not found" in res.output:
        pytest.skip(f"no TruthfulQA data here: {res.output.strip()}")
    assert res.exit_code == 0, res.output
    assert seen["dtype"] == "bf16" and seen["device_map"] == "auto"
    assert seen["attn_implementation"] == "sdpa" and seen["dtypes"] == {torch.bfloat16}


def test_score_loads_with_every_flag(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "ckpt", dtype=torch.bfloat16)
    seen = _spy_load(monkeypatch)
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "Q: 2+2? A:", "answer": " 4"}\n')
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, [
        "score", "--input", str(inp), "--out", str(out), "--model", str(folder), "--quiet",
        "--dtype", "auto", "--device-map", json.dumps({"": "cpu"}),
        "--attn-implementation", "eager", "--revision", "main"])
    assert res.exit_code == 0, res.output
    assert seen["dtype"] == "auto" and seen["device_map"] == {"": "cpu"}
    assert seen["attn_implementation"] == "eager" and seen["revision"] == "main"
    assert seen["trust_remote_code"] is False and seen["dtypes"] == {torch.bfloat16}
    row = json.loads(out.read_text())
    assert 0 < row["p"] <= 1 and row["epistemic"] > 0
