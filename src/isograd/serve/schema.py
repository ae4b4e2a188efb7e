"""The OpenAI request and response bodies of `isograd serve`: checks, jobs and errors.

A request body becomes one `Job` (the templated prompt's token ids and the decoding options) or
an `ApiError` whose OpenAI-style body names the offending field. Nothing is silently ignored:

* supported: ``model``, ``messages`` (chat) / ``prompt`` (completions), ``max_tokens`` (chat
  also ``max_completion_tokens``), ``temperature`` (0 greedy, > 0 sampling; default 1, as
  OpenAI), ``stop``, ``seed``, ``user`` (recorded nowhere, changes nothing: OpenAI's own
  meaning), and the extension ``token_uncertainty`` (true: the per-token profile);
* accepted only at their OpenAI default (`AT_DEFAULT`): ``n``, ``stream``, ``top_p``, the
  penalties, ``logprobs``, tools and the like; any other value is a 400 naming the parameter;
* any other name is a 400 ("unknown parameter").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..lm.batching import encode_prompt
from ..lm.options import SCORING
from ..lm.prompts import has_chat_template
from .options import SERVE

# OpenAI parameters served only at their default value (None, OpenAI's null, always passes)
AT_DEFAULT: dict[str, tuple[Any, ...]] = {
    "n": (1,), "stream": (False,), "stream_options": (), "top_p": (1,),
    "frequency_penalty": (0,), "presence_penalty": (0,), "logprobs": (False, 0),
    "top_logprobs": (0,), "logit_bias": ({},), "tools": ([],), "tool_choice": ("none",),
    "functions": ([],), "function_call": ("none",), "parallel_tool_calls": (True,),
    "response_format": ({"type": "text"},), "store": (False,), "echo": (False,),
    "best_of": (1,), "suffix": ("",),
}
CHAT_ONLY = ("messages", "max_completion_tokens", "tools", "tool_choice", "functions",
             "function_call", "parallel_tool_calls", "response_format", "store", "top_logprobs")
COMPLETION_ONLY = ("prompt", "echo", "best_of", "suffix")
COMMON = ("model", "max_tokens", "temperature", "stop", "seed", "user", "token_uncertainty")
ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ServeOptions:
    """What a server answers and its limits (fixed at start).

    Attributes:
        model_name: the one model id served (`GET /v1/models`; a request naming another is a 400).
        max_batch_size: requests per generation batch and score pass.
        max_wait_ms: how long the first request of a batch waits for others.
        queue_size: requests waiting for a batch; one more is answered 429.
        request_timeout_s: a request not answered by then is answered 503.
        max_tokens_cap: the largest ``max_tokens`` accepted.
        default_max_tokens: ``max_tokens`` when the request gives none.
        max_body_bytes: the largest request body accepted.
        api_key: when set, every /v1 request needs ``Authorization: Bearer <key>``.
        uncertainty: False serves plain generation (no score pass; the benchmark's baseline).
        prediction: what p is (`isograd.lm.Prediction`).
        sigma2: the parameter variance σ² of the epistemic term.
    """

    model_name: str
    max_batch_size: int = SERVE["max_batch_size"].default
    max_wait_ms: float = SERVE["max_wait_ms"].default
    queue_size: int = SERVE["queue_size"].default
    request_timeout_s: float = SERVE["request_timeout_s"].default
    max_tokens_cap: int = SERVE["max_tokens_cap"].default
    default_max_tokens: int = 64
    max_body_bytes: int = 1_000_000
    api_key: str | None = None
    uncertainty: bool = True
    prediction: str = SCORING["prediction"].default
    sigma2: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "queue_size", "max_tokens_cap", "default_max_tokens",
                     "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or not self.request_timeout_s > 0:
            raise ValueError("max_wait_ms must be >= 0 and request_timeout_s > 0")
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError(f"default_max_tokens {self.default_max_tokens} is above "
                             f"max_tokens_cap {self.max_tokens_cap}")


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = (
            message, param, status, kind, code)

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class Job:
    """One request's work for the batch engine.

    Attributes:
        prompt: the prompt text (chat: after the model's chat template).
        prompt_ids: its token ids (no special tokens added: the template has them).
        max_tokens: cap on answer tokens.
        temperature: 0 greedy, else sampling temperature.
        seed: seed of the sampling generator.
        stop: stop sequences (the answer ends before the first one).
        profile: also the per-token profile.
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    seed: int
    stop: tuple[str, ...]
    profile: bool


def _bad(param: str, message: str) -> ApiError:
    return ApiError(f"{param}: {message}", param=param)


def _int(body: dict[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise _bad(name, f"must be an integer, got {type(v).__name__}")
    return v


def _same(v: Any, default: Any) -> bool:
    """`v` is `default` (a number equal as a number: top_p 1.0 is 1; a bool only a bool)."""
    number = (int, float)
    if isinstance(default, bool) or isinstance(v, bool):
        return v is default
    if isinstance(default, number):
        return isinstance(v, number) and v == default
    return type(v) is type(default) and v == default


def _check_names(body: Any, kind: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(f"the request body must be a JSON object, got {type(body).__name__}")
    other = COMPLETION_ONLY if kind == "chat" else CHAT_ONLY
    mine = set(COMMON) | set(AT_DEFAULT) | (set(CHAT_ONLY) if kind == "chat" else
                                             set(COMPLETION_ONLY))
    for name, v in body.items():
        if name in other and name not in mine:
            where = "/v1/completions" if kind == "chat" else "/v1/chat/completions"
            raise _bad(name, f"is a parameter of {where}, not of this endpoint")
        if name not in mine:
            raise _bad(name, "unknown parameter")
        if name in AT_DEFAULT and v is not None and not any(
                _same(v, d) for d in AT_DEFAULT[name]):
            allowed = " or ".join(repr(d) for d in AT_DEFAULT[name]) or "null"
            raise _bad(name, f"{v!r} is not supported by isograd serve (accepted: {allowed})")
    return body


def _model(body: dict[str, Any], served: str) -> None:
    if "model" not in body:
        raise _bad("model", "missing (this server serves " + repr(served) + ")")
    if not isinstance(body["model"], str):
        raise _bad("model", f"must be a string, got {type(body['model']).__name__}")
    if body["model"] != served:
        raise ApiError(f"model: unknown model {body['model']!r}; this server serves "
                       f"{served!r}", param="model", code="model_not_found")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if msgs is None:
        raise _bad("messages", "missing")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages", "must be a non-empty array of {role, content}")
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(where, "must be an object {role, content}")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise _bad(f"{where}.{extra[0]}", "not supported (only role and content)")
        if m.get("role") not in ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(ROLES)}, got "
                       f"{m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise _bad(f"{where}.content", "must be a string")
    return msgs


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise _bad("stop", "must be a non-empty string or an array of them")
    if len(items) > MAX_STOP:
        raise _bad("stop", f"at most {MAX_STOP} sequences, got {len(items)}")
    return tuple(items)


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The model's context in tokens (its config's positions, else the tokenizer's limit)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else None


def parse_job(body: Any, kind: str, *, tokenizer: Any, options: ServeOptions,
              context: int | None) -> Job:
    """Check a chat (``kind="chat"``) or completion request body and make its `Job`.

    Raises:
        ApiError: a 400 naming the field, for anything the server does not accept.
    """
    body = _check_names(body, kind)
    _model(body, options.model_name)
    max_tokens = _int(body, "max_tokens")
    alias = _int(body, "max_completion_tokens")
    if alias is not None and max_tokens is not None and alias != max_tokens:
        raise _bad("max_completion_tokens", "differs from max_tokens; give one")
    name = "max_tokens" if max_tokens is not None or alias is None else "max_completion_tokens"
    max_tokens = options.default_max_tokens if max_tokens is None and alias is None else (
        max_tokens if max_tokens is not None else alias)
    if not 1 <= max_tokens <= options.max_tokens_cap:
        raise _bad(name, f"must be between 1 and {options.max_tokens_cap}, got {max_tokens}")
    temp = body.get("temperature")
    temp = 1.0 if temp is None else temp
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not (
            math.isfinite(temp) and 0 <= temp <= 2):
        raise _bad("temperature", f"must be a number between 0 and 2, got {temp!r}")
    seed = _int(body, "seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise _bad("seed", f"must be between 0 and {MAX_SEED}, got {seed}")
    if seed is None:  # OpenAI's default: not reproducible
        import secrets

        seed = secrets.randbelow(MAX_SEED)
    profile = body.get("token_uncertainty", False)
    if not isinstance(profile, bool):
        raise _bad("token_uncertainty", "must be true or false")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("user", "must be a string")
    stop = _stop(body)
    field = "messages" if kind == "chat" else "prompt"
    if kind == "chat":
        if not has_chat_template(tokenizer):
            raise _bad("messages", "this model has no chat template; use /v1/completions")
        try:
            prompt = tokenizer.apply_chat_template(_messages(body), tokenize=False,
                                                   add_generation_prompt=True)
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - the template's own refusal (e.g. role order)
            raise _bad("messages", f"the model's chat template refused them: {e}") from None
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise _bad("prompt", "missing")
        if not isinstance(prompt, str):
            raise _bad("prompt", "must be a string (token ids and arrays of prompts are not "
                       "supported)")
    ids = encode_prompt(tokenizer, prompt)
    if not ids:
        raise _bad(field, "has no tokens")
    if context is not None and len(ids) >= context:
        raise _bad(field, f"is {len(ids)} tokens; the model's context is {context}")
    if context is not None and len(ids) + max_tokens > context:
        raise _bad(name, f"{len(ids)} prompt tokens + {max_tokens} exceed the model's context "
                   f"of {context}")
    return Job(prompt=prompt, prompt_ids=tuple(ids), max_tokens=max_tokens,
               temperature=float(temp), seed=seed, stop=stop, profile=profile)
