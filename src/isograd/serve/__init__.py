"""`isograd serve`: an OpenAI-compatible HTTP server whose every answer carries its uncertainty.

``run(model=...)`` loads the model once and serves it with uvicorn (`create_app`); see
`isograd.serve.app` for the endpoints, `isograd.serve.schema` for what a request may hold,
`isograd.serve.engine` for how a batch is answered and `isograd.serve.batching` for the queue.
Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client).
"""

from __future__ import annotations

import inspect
from typing import Any

from .options import SERVE

__all__ = ["SERVE", "ServeOptions", "create_app", "run"]


def __getattr__(name: str) -> Any:
    """`create_app` and `ServeOptions` import the web framework: only when asked for."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeOptions":
        from .schema import ServeOptions

        return ServeOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(model: str | None = None, *, uncertainty: bool = True, log_level: str = "info",
        **given: Any) -> None:
    """Load the model and serve it until SIGINT/SIGTERM (which finish the requests in flight).

    Args:
        model: the model ("smollm2-135m" when None), as `SERVE`'s ``model``.
        uncertainty: False serves plain generation (no score pass; the benchmark's baseline).
        log_level: uvicorn's log level.
        given: the options of `SERVE` (declared there once, with their defaults and help):
            ``host``/``port`` (127.0.0.1 by default: only this machine), ``detector``
            (a detector file: adds p_error and abstain to every answer), the batching limits
            (see `ServeOptions`), ``api_key``, ``threads`` and `load_model`'s options.

    Raises:
        ValueError: a bad option (named), before the model is loaded.
    """
    import torch
    import uvicorn

    from ..lm import load_model
    from ..lm.options import load_options
    from .app import create_app
    from .schema import ServeOptions

    o = SERVE.resolve(given if model is None else {**given, "model": model})
    load = load_options(o)
    model, host, detector = o["model"], o["host"], o["detector"]
    options = ServeOptions(model_name=model, max_batch_size=o["max_batch_size"],
                           max_wait_ms=o["max_wait_ms"], queue_size=o["queue_size"],
                           request_timeout_s=o["request_timeout_s"],
                           max_tokens_cap=o["max_tokens_cap"],
                           default_max_tokens=min(64, o["max_tokens_cap"]),
                           api_key=o["api_key"] or None, uncertainty=uncertainty)
    if host not in ("127.0.0.1", "localhost", "::1") and not options.api_key:
        import warnings

        warnings.warn(f"serving on {host} without an API key: anyone who reaches this port "
                      "can use the model (--api-key or ISOGRAD_API_KEY)", stacklevel=2)
    if o["threads"]:
        torch.set_num_threads(o["threads"])
    lm, tokenizer = load_model(model, dtype=o["dtype"], device=o["device"], **load)
    det = None
    if detector is not None:
        from ..detect import load_detector  # only with a detector: its extra may be absent

        det = load_detector(detector, model_id=model, revision=o["revision"])
    app = create_app(lm, tokenizer, options, detector=det)
    # timeout_graceful_shutdown None: on SIGTERM wait for every request in flight
    uvicorn.run(app, host=host, port=o["port"], log_level=log_level,
                timeout_graceful_shutdown=None)


run.__signature__ = SERVE.without("model").signature(  # type: ignore[attr-defined]
    inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                      default=SERVE["model"].default),
    inspect.Parameter("uncertainty", inspect.Parameter.KEYWORD_ONLY, default=True),
    inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default="info"))
