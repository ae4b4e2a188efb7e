"""The options of every front door that loads and scores a causal LM, declared once
(`isograd.options.Option`): ``isograd qa``, ``isograd score`` (and a server) compose theirs from
these lists.

* `LOAD`: which model and how it is loaded (`load_model`'s options).
* `SCORING`: how an answer's p and gradient terms are computed (`score`'s options).

The stages named here are those of ``isograd qa`` (generate, score, trace; ``mc-generate`` is
the generate stage of a multiple-choice dataset, which scores the options itself) and
``pairs``, the rows of ``isograd score``.
"""

from __future__ import annotations

from typing import Any

from ..layer_scale import Covariance, LayerScale
from ..norms.api import Method
from ..options import Option, Options
from .models import EMBEDDED_MODELS, AttnImplementation, DeviceMap, DType
from .prompts import PromptStyle
from .score import Prediction

MODEL_HELP = ("Model: an embedded one (" + ", ".join(repr(m) for m in EMBEDDED_MODELS)
              + "), a hub id or a local folder.")
DTYPE_HELP = "Weights dtype: " + " | ".join(m.value for m in DType) + " (auto: the checkpoint's own)."
DEVICE_MAP_HELP = ("Split the model over devices: " + " | ".join(m.value for m in DeviceMap)
                   + ", or a JSON object {module: device}.")
ATTN_HELP = "Attention kernel: " + " | ".join(m.value for m in AttnImplementation) + "."

LOAD = Options((
    Option("model", "smollm2-135m", MODEL_HELP, stages=("generate", "pairs"), recorded=True),
    Option("dtype", "fp32", DTYPE_HELP, stages=("generate",), recorded=True),
    Option("device", "cpu", "Torch device (cpu, cuda, cuda:1, ...); under torchrun 'cuda' is "
           "cuda:LOCAL_RANK.", stages=("generate",), recorded=True),
    Option("device_map", None, DEVICE_MAP_HELP),
    Option("revision", None, "Hub revision (branch, tag or commit) of --model."),
    Option("attn_implementation", None, ATTN_HELP),
    Option("trust_remote_code", False, "Allow model code from the hub.", type=bool),
))
"""`load_model`'s options; the last four change how, not what, is computed: in no fingerprint."""

SCORING = Options((
    Option("prediction", "geometric", "p of an answer", choice=Prediction,
           stages=("score", "pairs"), recorded=True),
    Option("prompt", "short", "Prompt style", choice=PromptStyle, stages=("generate",),
           recorded=True),
    Option("norm_method", "auto", "Gradient-norm engine", choice=Method,
           # a multiple-choice generate stage scores its pick (runs before this entry: auto)
           stages=("score", "trace", "mc-generate"), legacy={"mc-generate": "auto"},
           recorded=True),
    Option("covariance", "isotropic", "Which term is 'epistemic' (both are always written)",
           choice=Covariance, stages=("pairs",), legacy="isotropic"),
    # runs made before these existed were scored at these values
    Option("layer_scale", "weight-variance", "Rule of the layer-scaled term", choice=LayerScale,
           stages=("score", "pairs"), legacy="weight-variance", recorded=True),
    Option("last_layers", 5, "k of epistemic_last_layers (the last k blocks).", type=int, min=1,
           stages=("score", "pairs"), legacy=5, recorded=True),
    Option("trace", False, "Also score every answer token (per-token profile); ~T times the "
           "score.", type=bool, recorded=True),
    Option("batch_size", 1, "Answers per forward+backward.", type=int, min=1),
))
"""How an answer is scored: `score`'s options."""


def check_device(device: str) -> None:
    """`device` names a torch device this machine has (ValueError otherwise)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:1, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{device!r}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{device!r}: MPS is not available on this machine")


def load_options(values: dict[str, Any], *, check_device_: bool = True) -> dict[str, Any]:
    """The `load_model` options beyond the model, dtype and device, from a front door's option
    values, each checked (ValueError naming its flag, before any work).

    Args:
        values: option values (at least those of `LOAD`).
        check_device_: also check that ``values["device"]`` exists on this machine.
    """
    from .models import parse_device_map, parse_dtype

    def named(name: str, fn: Any, value: Any) -> Any:
        try:
            return fn(value)
        except ValueError as e:
            raise ValueError(f"{LOAD[name].cli_flag}: {e}") from None

    named("dtype", parse_dtype, values["dtype"])
    if check_device_:
        named("device", check_device, values["device"])
    opts: dict[str, Any] = {"trust_remote_code": bool(values.get("trust_remote_code"))}
    if values.get("device_map") is not None:
        opts["device_map"] = named("device_map", parse_device_map, values["device_map"])
    if values.get("revision") is not None:
        opts["revision"] = values["revision"]
    if values.get("attn_implementation") is not None:
        opts["attn_implementation"] = named("attn_implementation", AttnImplementation.parse,
                                            values["attn_implementation"]).value
    return opts
