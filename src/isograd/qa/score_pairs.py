"""`isograd score`: score (prompt, answer) pairs generated elsewhere, resumably."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ..options import NEW
from ..rows.stagefiles import RunMismatchError
from .options import SCORE
from .records import read_text
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


def _check_rows(rows: list[dict[str, Any]], outp: Path, want: dict[str, Any]) -> None:
    """Refuse rows (of the output or its part files) made with other options: those `SCORE`
    names with the ``pairs`` stage, and the prompt style; a row lacking an option (written
    before it existed) was made at the option's `legacy` value."""
    for r in rows:
        # rows written before prompt_style existed wrapped questions in the "short" prompt
        have = {"prompt_style": r.get("prompt_style", SCORE["prompt"].legacy
                                      if want["prompt_style"] else None)}
        have.update({o.name: r.get(o.name, None if o.legacy_at("pairs") is NEW
                                   else o.legacy_at("pairs"))
                     for o in SCORE if "pairs" in o.stages})
        if have != want:
            raise RunMismatchError(
                f"{outp} holds rows scored with "
                + ", ".join(f"{k}={v!r}" for k, v in have.items()) + "; use another --out")


def score_file(input: str | Path, out: str | Path, *,
               loaded: tuple[Any, Any] | None = None, **options: Any) -> int:
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
    refused. The options are those of `isograd.qa.options.SCORE` (declared there once, with
    their defaults and help; ``isograd score --help`` lists them); the load options (dtype,
    device, device_map, revision, ...) go to `load_model`.

    Under torchrun each rank scores its share into its own part file and rank 0 merges them into
    `out` in input order (`isograd.rows.ranks`); `shard` "fsdp" shards the model across ranks.

    Returns:
        The number of pairs scored by this call (by all ranks together).
    """
    from ..lm import load_model, qa_prompt, score
    from ..lm.fsdp import Shard
    from ..lm.options import load_options
    from ..norms.api import Method
    from ..rows import ranks
    from ..rows.runner import run_rows

    o = SCORE.resolve(options)
    pred, cov, rule = o["prediction"], o["covariance"], o["layer_scale"]
    style = o["prompt"] if o["as_question"] else None
    load = load_options(o, check_device_=False)
    sharded = Shard.parse(o["shard"]) is Shard.FSDP
    if sharded and load.get("device_map") is not None:
        raise ValueError("--shard fsdp and --device-map are two ways to split a model; "
                         "choose one")
    if sharded and Method.parse(o["norm_method"]) is Method.LOOP:
        raise ValueError("--shard fsdp needs --norm-method auto or ghost: the loop engine "
                         "cannot see one example's gradient when FSDP2 reduce-scatters it")
    pairs = _read_pairs(Path(input))
    outp = Path(out)
    recorded = {"prompt_style": style,
                **{opt.name: o[opt.name] for opt in SCORE if "pairs" in opt.stages}}
    rank = ranks.setup(o["device"])
    ranks.on_peer_failure(rank, outp)
    rows = ranks.read_all(outp)
    _check_rows(rows, outp, recorded)
    if {r["id"] for r in rows} >= {p[0] for p in pairs}:
        ranks.finish(outp, [p[0] for p in pairs], rank)  # parts of a finished run: merged only
        return 0
    loaded_: list[tuple[Any, Any]] = [loaded] if loaded is not None else []

    def compute(chunk: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        if not loaded_:  # loaded by the first batch: a rank without pairs loads nothing
            loaded_.append(_load(load_model, o["model"], o["dtype"], o["device"], rank,
                                 sharded, load))
        m, tok = loaded_[0]
        prompts = [qa_prompt(tok, p, style) if style else p for _, p, _ in chunk]
        s = score(m, tok, prompts, [a for _, _, a in chunk], prediction=pred,
                  method=o["norm_method"], batch_size=o["batch_size"], trace=o["trace"],
                  covariance=cov, layer_scale=rule, last_layers=o["last_layers"])
        return [{"id": rid, "prompt": p, "answer": a, **scalar_fields(s, j),
                 **s.row_vectors(j), "token_logprobs": list(s.token_logprobs[j]),
                 "covariance": cov, "layer_scale": rule, "last_layers": o["last_layers"],
                 "model": o["model"], "prediction": pred, "prompt_style": style}
                for j, (rid, p, a) in enumerate(chunk)]

    import torch

    saved = torch.get_num_threads()
    if o["threads"]:
        torch.set_num_threads(o["threads"])
    try:
        # FSDP2 gathers weights collectively: every rank runs as many batches as the
        # largest share needs
        return run_rows(outp, pairs, compute, key=lambda x: x[0], batch_size=o["batch_size"],
                        lockstep=sharded, desc="score", progress=o["progress"])
    finally:
        torch.set_num_threads(saved)


score_file.__signature__ = SCORE.signature(  # type: ignore[attr-defined]
    *(inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("input", "out")),
    inspect.Parameter("loaded", inspect.Parameter.KEYWORD_ONLY, default=None))


def _load(load_model: Any, model: str, dtype: str, device: str, rank: Any,
          sharded: bool, options: dict[str, Any]) -> tuple[Any, Any]:
    from ..lm.fsdp import shard_model
    from ..rows.ranks import device_for

    dev = device_for(device, rank)
    if not sharded:
        return load_model(model, dtype=dtype, device=dev, **options)
    # FSDP2 moves each shard to `dev`
    m, tok = load_model(model, dtype=dtype, device="cpu", **options)
    return shard_model(m, rank, dev), tok
