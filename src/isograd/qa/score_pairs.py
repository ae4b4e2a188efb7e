"""`isograd score`: score (prompt, answer) pairs generated elsewhere, resumably."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .records import read_text
from .runfiles import RunMismatchError
from .stages import scalar_fields


def _read_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(id, prompt, answer) per line of a pairs JSONL file; errors name the file and line."""
    out: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{i}: invalid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i}: expected an object with 'prompt' and 'answer'")
        for key in ("prompt", "answer"):
            if not isinstance(rec.get(key), str) or not rec[key]:
                raise ValueError(f"{path}:{i}: field {key!r} missing or not a non-empty string")
        rid = str(rec.get("id", f"line-{i}"))
        if rid in seen:
            raise ValueError(f"{path}:{i}: field 'id': duplicate id {rid!r} (first at line "
                             f"{seen[rid]})")
        seen[rid] = i
        out.append((rid, rec["prompt"], rec["answer"]))
    if not out:
        raise ValueError(f"{path}: no pairs in file (one JSON object per line: prompt, answer)")
    return out


def _check_rows(rows: list[dict[str, Any]], outp: Path, model: str, pred: str,
                style: str | None, signals: dict[str, Any]) -> None:
    """Refuse rows (of the output or its part files) made with other options."""
    for r in rows:
        # rows written before prompt_style existed wrapped questions in the "short" prompt
        old_style = r.get("prompt_style", "short" if style else None)
        # rows written before the signal options existed were scored at their defaults
        old = {"covariance": r.get("covariance", "isotropic"),
               "layer_scale": r.get("layer_scale", "weight-variance"),
               "last_layers": r.get("last_layers", 5)}
        if (r.get("model") != model or r.get("prediction") != pred or old_style != style
                or old != signals):
            raise RunMismatchError(
                f"{outp} holds rows scored with model={r.get('model')!r}, "
                f"prediction={r.get('prediction')!r}, prompt_style={old_style!r}, "
                + ", ".join(f"{k}={v!r}" for k, v in old.items()) + "; use another --out")


def score_file(
    input: str | Path,
    out: str | Path,
    *,
    model: str = "smollm2-135m",
    prediction: str = "geometric",
    as_question: bool = False,
    prompt: str = "short",
    norm_method: str = "auto",
    trace: bool = False,
    covariance: str = "isotropic",
    layer_scale: str = "weight-variance",
    last_layers: int = 5,
    batch_size: int = 8,
    dtype: str = "fp32",
    device: str = "cpu",
    load_options: dict[str, Any] | None = None,
    shard: str = "none",
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
) -> int:
    """Score (prompt, answer) pairs from a JSONL file into another, resumably.

    Input lines: ``{"prompt": str, "answer": str, "id": optional}`` (id defaults to
    ``line-<n>``). The answer is appended to the prompt verbatim; with `as_question` the prompt
    is a bare question and is wrapped in `qa_prompt` of style `prompt` ("short" | "plain" |
    "fewshot"). Output lines: ``id, prompt, answer``, every per-row scalar of `score`'s result
    (``p, log_p, epistemic, aleatoric, total, n_tokens, grad_log_p``, ...),
    ``by_layer`` (block -> σ²‖∇p‖²), with `trace` ``token_epistemic, token_aleatoric`` (one
    value per answer token), ``token_logprobs, covariance, layer_scale, last_layers, model,
    prediction, prompt_style`` (null without `as_question`). `covariance` picks which term is
    ``epistemic`` ("isotropic" | "layer-scaled"; both are written). Ids already in `out` are
    skipped; rows made with another model, prediction, prompt style or signal option are
    refused. `dtype`, `device` and `load_options` (device_map, revision, ...) go to
    `load_model`.

    Under torchrun each rank scores its share into its own part file and rank 0 merges them into
    `out` in input order (`isograd.distributed`); `shard` "fsdp" shards the model across ranks.

    Returns:
        The number of pairs scored by this call (by all ranks together).
    """
    from .. import distributed as dd
    from ..layer_scale import Covariance, LayerScale
    from ..lm import Prediction, PromptStyle, load_model, qa_prompt, score
    from ..norms.api import Method

    pred = Prediction.parse(prediction).value
    cov, rule = Covariance.parse(covariance).value, LayerScale.parse(layer_scale).value
    if last_layers < 1:
        raise ValueError(f"last_layers must be >= 1, got {last_layers}")
    style = PromptStyle.parse(prompt).value if as_question else None
    sharded = dd.Shard.parse(shard) is dd.Shard.FSDP
    if sharded and (load_options or {}).get("device_map") is not None:
        raise ValueError("--shard fsdp and --device-map are two ways to split a model; "
                         "choose one")
    if sharded and Method.parse(norm_method) is Method.LOOP:
        raise ValueError("--shard fsdp needs --norm-method auto or ghost: the loop engine "
                         "cannot see one example's gradient when FSDP2 reduce-scatters it")
    pairs = _read_pairs(Path(input))
    outp = Path(out)
    new = {"covariance": cov, "layer_scale": rule, "last_layers": last_layers}
    rank = dd.setup(device)
    dd.on_peer_failure(rank, outp)
    rows = dd.read_all(outp)
    _check_rows(rows, outp, model, pred, style, new)
    if {r["id"] for r in rows} >= {p[0] for p in pairs}:
        dd.finish(outp, [p[0] for p in pairs], rank)  # parts of a finished run: merged only
        return 0
    loaded_: list[tuple[Any, Any]] = [loaded] if loaded is not None else []

    def compute(chunk: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        if not loaded_:  # loaded by the first batch: a rank without pairs loads nothing
            loaded_.append(_load(load_model, model, dtype, device, rank, sharded,
                                 load_options or {}))
        m, tok = loaded_[0]
        prompts = [qa_prompt(tok, p, style) if style else p for _, p, _ in chunk]
        s = score(m, tok, prompts, [a for _, _, a in chunk], prediction=pred,
                  method=norm_method, batch_size=batch_size, trace=trace, covariance=cov,
                  layer_scale=rule, last_layers=last_layers)
        return [{"id": rid, "prompt": p, "answer": a, **scalar_fields(s, j),
                 **s.row_vectors(j), "token_logprobs": list(s.token_logprobs[j]),
                 "covariance": cov, "layer_scale": rule, "last_layers": last_layers,
                 "model": model, "prediction": pred, "prompt_style": style}
                for j, (rid, p, a) in enumerate(chunk)]

    # FSDP2 gathers weights collectively: every rank runs as many batches as the largest share
    return dd.run_rows(outp, pairs, compute, key=lambda x: x[0], batch_size=batch_size,
                       lockstep=sharded, desc="score", progress=progress)


def _load(load_model: Any, model: str, dtype: str, device: str, rank: Any,
          sharded: bool, options: dict[str, Any]) -> tuple[Any, Any]:
    from .. import distributed as dd

    dev = dd.device_for(device, rank)
    if not sharded:
        return load_model(model, dtype=dtype, device=dev, **options)
    # FSDP2 moves each shard to `dev`
    m, tok = load_model(model, dtype=dtype, device="cpu", **options)
    return dd.shard_model(m, rank, dev), tok
