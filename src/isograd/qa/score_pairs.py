"""`isograd score`: score (prompt, answer) pairs generated elsewhere, resumably."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .records import read_text
from .runfiles import RunMismatchError, append_row, open_rows, read_rows


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


def score_file(
    input: str | Path,
    out: str | Path,
    *,
    model: str = "smollm2-135m",
    prediction: str = "geometric",
    as_question: bool = False,
    prompt: str = "short",
    norm_method: str = "auto",
    batch_size: int = 8,
    dtype: str = "fp32",
    device: str = "cpu",
    load_options: dict[str, Any] | None = None,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
) -> int:
    """Score (prompt, answer) pairs from a JSONL file into another, resumably.

    Input lines: ``{"prompt": str, "answer": str, "id": optional}`` (id defaults to
    ``line-<n>``). The answer is appended to the prompt verbatim; with `as_question` the prompt
    is a bare question and is wrapped in `qa_prompt` of style `prompt` ("short" | "plain" |
    "fewshot"). Output lines: ``id, prompt, answer, p, log_p, epistemic, aleatoric, total,
    n_tokens, token_logprobs, model, prediction, prompt_style`` (null without `as_question`).
    Ids already in `out` are skipped; rows made with another model, prediction or prompt style
    are refused. `dtype`, `device` and `load_options` (device_map, revision, ...) go to
    `load_model`.

    Returns:
        The number of pairs scored by this call.
    """
    from ..lm import Prediction, PromptStyle, load_model, qa_prompt, score

    pred = Prediction.parse(prediction).value
    style = PromptStyle.parse(prompt).value if as_question else None
    pairs = _read_pairs(Path(input))
    outp = Path(out)
    rows = read_rows(outp)
    for r in rows[:1]:
        # rows written before prompt_style existed wrapped questions in the "short" prompt
        old_style = r.get("prompt_style", "short" if style else None)
        if r.get("model") != model or r.get("prediction") != pred or old_style != style:
            raise RunMismatchError(
                f"{outp} holds rows scored with model={r.get('model')!r}, "
                f"prediction={r.get('prediction')!r}, prompt_style={old_style!r}; "
                "use another --out")
    done = {r["id"] for r in rows}
    todo = [p for p in pairs if p[0] not in done]
    if not todo:
        return 0
    m, tok = loaded if loaded is not None else load_model(model, dtype=dtype, device=device,
                                                          **(load_options or {}))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="score", unit="pair")
    outp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open_rows(outp) as f:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                prompts = [qa_prompt(tok, p, style) if style else p for _, p, _ in chunk]
                s = score(m, tok, prompts, [a for _, _, a in chunk], prediction=pred,
                          method=norm_method, batch_size=batch_size)
                for j, (rid, p, a) in enumerate(chunk):
                    append_row(f, {
                        "id": rid, "prompt": p, "answer": a, "p": float(s.p[j]),
                        "log_p": float(s.log_p[j]), "epistemic": float(s.epistemic[j]),
                        "aleatoric": float(s.aleatoric[j]), "total": float(s.total[j]),
                        "n_tokens": int(s.n_tokens[j]), "token_logprobs": list(s.token_logprobs[j]),
                        "model": model, "prediction": pred, "prompt_style": style,
                    })
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return len(todo)

