"""`isograd score`: score (prompt, answer) pairs generated elsewhere, resumably."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ..options import NEW
from ..rows.files import digest
from ..rows.stagefiles import RunMismatchError
from .options import SCORE
from .records import read_text
from .stages import scalar_fields


def pair_id(prompt: str, answer: str, n: int = 1) -> str:
    """The default id of a pair: from its content, not its line, so editing, inserting or
    reordering other lines leaves it; the `n`-th copy of the same pair gets ``-<n>``."""
    base = "pair-" + digest([prompt, answer])[:12]
    return base if n == 1 else f"{base}-{n}"


def _read_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(id, prompt, answer) per line of a pairs JSONL file; errors name the file and line."""
    out: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    copies: dict[tuple[str, str], int] = {}
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
        if "id" in rec:
            rid = str(rec["id"])
        else:
            pair = (rec["prompt"], rec["answer"])
            copies[pair] = copies.get(pair, 0) + 1
            rid = pair_id(*pair, copies[pair])
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


def _check_line_ids(rows: list[dict[str, Any]], ids: set[str], outp: Path) -> None:
    """Refuse an output whose rows carry the line-number ids of earlier versions (``line-<n>``,
    no ``input_fp``) that the input no longer names: resumed under the content ids, every pair
    would be scored again beside its old row."""
    old = [r["id"] for r in rows if "input_fp" not in r and str(r["id"]).startswith("line-")
           and r["id"] not in ids]
    if old:
        raise RunMismatchError(
            f"{outp} holds rows with line-number ids (e.g. {old[0]!r}), the default of earlier "
            "versions; ids now come from each pair's content. Give the input lines those ids "
            "(\"id\": \"line-<n>\") to resume, or use another --out")


def score_file(input: str | Path, out: str | Path, *,
               loaded: tuple[Any, Any] | None = None, **options: Any) -> int:
    """Score (prompt, answer) pairs from a JSONL file into another, resumably.

    Input lines: ``{"prompt": str, "answer": str, "id": optional}`` (id defaults to
    ``pair-<hash of prompt and answer>``, `pair_id`). The answer is appended to the prompt
    verbatim; with `as_question` the prompt is a bare question and is wrapped in `qa_prompt` of
    style `prompt` ("short" | "plain" | "fewshot"). Output lines: ``id, prompt, answer``, every
    per-row scalar of `score`'s result (``p, log_p, epistemic, aleatoric, total, n_tokens,
    grad_log_p``, ...), ``by_layer`` (block -> σ²‖∇p‖²), with `trace` ``token_epistemic,
    token_aleatoric`` (one value per answer token), ``token_logprobs, covariance, layer_scale,
    last_layers, model, prediction, prompt_style`` (null without `as_question`), ``input_fp``.
    `covariance` picks which term is ``epistemic`` ("isotropic" | "layer-scaled"; both are
    written). Ids already in `out` are skipped unless the row's ``input_fp`` (the digest of its
    prompt, answer and the options that change it) differs from the pair's: such a row is
    recomputed (a row written before ``input_fp`` existed is checked by the prompt and answer
    it stores). Rows made with another model, prediction, prompt style or signal option are
    refused. Before any row is written, a pair longer than a learned position table or, alone,
    over the memory budget (`memory_budget` bytes, default half the available memory) is
    refused by name; a batch over the budget is split, pairs grouped by length. The options
    are those of `isograd.qa.options.SCORE` (declared there once, with their defaults and
    help; ``isograd score --help`` lists them); the load options (dtype, device, device_map,
    revision, ...) go to `load_model`.

    Under torchrun each rank scores its share into its own part file and rank 0 merges them into
    `out` in input order (`isograd.rows.ranks`); `shard` "fsdp" shards the model across ranks.

    With `detector` (a file of ``isograd fit-detector``; ``allow_model_mismatch`` skips its
    model check), every output row also gets ``p_error`` and ``abstain``.

    Returns:
        The number of pairs scored by this call (by all ranks together).
    """
    from ..lm import load_model, qa_prompt, score
    from ..lm.batching import check_context, encode_pairs
    from ..lm.fsdp import Shard
    from ..lm.memory import bytes_per_token, plan_batches, token_budget
    from ..lm.options import load_options
    from ..norms.api import Method
    from ..rows import ranks
    from ..rows.ranks import device_for
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
    detector = None
    if o["detector"]:  # a bad file or another model fails before anything is written
        from ..detect import load_detector

        detector = load_detector(o["detector"], model_id=o["model"], revision=o["revision"],
                                 allow_model_mismatch=o["allow_model_mismatch"])
        _check_features(detector)
    if sharded and o["trace"]:
        raise ValueError("--shard fsdp cannot run with --trace: the per-token passes depend on "
                         "each rank's answer lengths, so the ranks would make different numbers "
                         "of collective calls and hang; drop --trace or --shard fsdp")
    pairs = _read_pairs(Path(input))
    outp = Path(out)
    recorded = {"prompt_style": style,
                **{opt.name: o[opt.name] for opt in SCORE if "pairs" in opt.stages}}
    rank = ranks.setup(o["device"])
    ranks.on_peer_failure(rank, outp)
    done = ranks.read_all(outp)
    _check_rows(done, outp, recorded)
    _check_line_ids(done, {rid for rid, _, _ in pairs}, outp)
    loaded_: list[tuple[Any, Any]] = [loaded] if loaded is not None else []

    def model() -> tuple[Any, Any]:
        if not loaded_:  # loaded once there is work: a finished run loads nothing
            loaded_.append(_load(load_model, o["model"], o["dtype"], o["device"], rank,
                                 sharded, load))
        return loaded_[0]

    def sizes(chunk: list[tuple[str, str, str]]) -> tuple[list[str], list[int], list[str]]:
        """The prompts as scored, each pair's tokens, and how an error names each pair."""
        _, tok = model()
        prompts = [qa_prompt(tok, p, style) if style else p for _, p, _ in chunk]
        pairs = encode_pairs(tok, prompts, [a for _, _, a in chunk])
        return (prompts, [len(p) + len(a) for p, a in pairs],
                [f"{input}: pair {rid!r} (prompt + answer)" for rid, _, _ in chunk])

    budget_: list[tuple[int, str]] = []

    def budget() -> tuple[int, str]:
        """Padded tokens per pass (`isograd.lm.memory.token_budget`, taken once, when the
        model is loaded) and how an error says it."""
        if not budget_:
            m, mb = model()[0], o["memory_budget"]
            n = token_budget(m, mb, device_for(o["device"], rank))
            budget_.append((n, (f" of {mb / 1e9:.3g} GB" if mb else " of half the available "
                                "memory") + f" at {bytes_per_token(m) / 1e6:.3g} MB per token"))
        return budget_[0]

    def check(todo: list[tuple[str, str, str]]) -> None:
        """Every pair to score fits the model's context and, alone, the memory budget (else
        refused before any row)."""
        _, lengths, names = sizes(todo)
        check_context(model()[0], lengths, names)
        plan_batches(lengths, 1, budget()[0], names, budget()[1])

    def compute(chunk: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        m, tok = model()
        prompts, lengths, names = sizes(chunk)
        # a batch over the memory budget is split, pairs grouped by length; under FSDP2 every
        # rank must make the same calls, so a sharded run keeps its batches whole
        groups = ([list(range(len(chunk)))] if sharded else
                  plan_batches(lengths, len(chunk), budget()[0], names, budget()[1]))
        rows: dict[int, dict[str, Any]] = {}
        for g in groups:
            s = score(m, tok, [prompts[i] for i in g], [chunk[i][2] for i in g],
                      prediction=pred, method=o["norm_method"], batch_size=len(g),
                      trace=o["trace"], covariance=cov, layer_scale=rule,
                      last_layers=o["last_layers"])
            for j, i in enumerate(g):
                rid, p, a = chunk[i]
                rows[i] = {"id": rid, "prompt": p, "answer": a, **scalar_fields(s, j),
                           **s.row_vectors(j), "token_logprobs": list(s.token_logprobs[j]),
                           "covariance": cov, "layer_scale": rule,
                           "last_layers": o["last_layers"], "model": o["model"],
                           "prediction": pred, "prompt_style": style}
        return [rows[i] for i in range(len(chunk))]

    import torch

    saved = torch.get_num_threads()
    if o["threads"]:
        torch.set_num_threads(o["threads"])
    try:
        # FSDP2 gathers weights collectively: every rank runs as many batches as the
        # largest share needs
        n = run_rows(outp, pairs, compute, key=lambda x: x[0], batch_size=o["batch_size"],
                     lockstep=sharded, desc="score", progress=o["progress"],
                     fingerprint=lambda x: digest({"prompt": x[1], "answer": x[2],
                                                   "options": recorded}),
                     legacy=lambda x, row: (row.get("prompt"), row.get("answer")) == x[1:],
                     check=check)
    finally:
        torch.set_num_threads(saved)
    _judge(outp, detector, rank)
    return n


def _check_features(detector: Any) -> None:
    """Refuse, before anything is scored, a detector reading a field no score row holds (the
    rows hold `LMScores`' fields; the per-block groups are known only once scored)."""
    from dataclasses import fields

    from ..detect import MissingFeatureError
    from ..lm.score import LMScores

    known = {f.name for f in fields(LMScores)}
    lacking = [n for n in detector.feature_names if n.split("/")[0] not in known]
    if lacking:
        raise MissingFeatureError(f"the detector reads {', '.join(map(repr, lacking))}, which "
                                  "isograd score rows do not hold (an isograd qa baseline?)")


def _judge(outp: Path, detector: Any, rank: Any) -> None:
    """With a detector, every row of `outp` gets its ``p_error`` and ``abstain`` (rank 0 rewrites
    the finished file; the scores stay, so a missing feature costs no recomputation)."""
    if detector is None or not rank.main:
        return
    from ..rows.files import read_rows, rewrite_rows

    rewrite_rows(outp, detector.annotate(read_rows(outp)))


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
