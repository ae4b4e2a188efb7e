"""`isograd serve`: an OpenAI-compatible HTTP server whose every answer carries its uncertainty.

``run(model=...)`` loads the model once and serves it with uvicorn (`create_app`); see
`isograd.serve.app` for the endpoints, `isograd.serve.schema` for what a request may hold,
`isograd.serve.engine` for how a batch is answered and `isograd.serve.batching` for the queue.
Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client).
"""

from __future__ import annotations

from typing import Any

from .app import create_app
from .schema import ServeOptions

__all__ = ["ServeOptions", "create_app", "run"]


def run(
    model: str = "smollm2-135m",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    detector: str | None = None,
    max_batch_size: int = 8,
    max_wait_ms: float = 10.0,
    queue_size: int = 64,
    request_timeout_s: float = 300.0,
    max_tokens_cap: int = 256,
    api_key: str | None = None,
    uncertainty: bool = True,
    threads: int | None = None,
    dtype: str = "fp32",
    device: str = "cpu",
    log_level: str = "info",
    **load_options: Any,
) -> None:
    """Load `model` and serve it until SIGINT/SIGTERM (which finish the requests in flight).

    Args:
        model: ``"smollm2-135m"`` (embedded default), a hub id or a local folder; the name
            requests must give is this string.
        host, port: where to listen (127.0.0.1 by default: only this machine).
        detector: path of a detector file (`isograd.detect.load_detector`); adds p_error and
            abstain to every answer.
        max_batch_size, max_wait_ms, queue_size, request_timeout_s, max_tokens_cap, api_key,
            uncertainty: see `ServeOptions`.
        threads: torch CPU threads (None: torch's default).
        dtype, device, load_options: as `isograd.lm.load_model` (device_map, revision,
            attn_implementation, trust_remote_code).
        log_level: uvicorn's log level.

    Raises:
        ValueError: a bad option (named), before the model is loaded.
    """
    import torch
    import uvicorn

    from ..lm import load_model

    options = ServeOptions(model_name=model, max_batch_size=max_batch_size,
                           max_wait_ms=max_wait_ms, queue_size=queue_size,
                           request_timeout_s=request_timeout_s, max_tokens_cap=max_tokens_cap,
                           default_max_tokens=min(64, max_tokens_cap),
                           api_key=api_key or None, uncertainty=uncertainty)
    if host not in ("127.0.0.1", "localhost", "::1") and not options.api_key:
        import warnings

        warnings.warn(f"serving on {host} without an API key: anyone who reaches this port "
                      "can use the model (--api-key or ISOGRAD_API_KEY)", stacklevel=2)
    if threads:
        torch.set_num_threads(threads)
    lm, tokenizer = load_model(model, dtype=dtype, device=device, **load_options)
    det = None
    if detector is not None:
        from ..detect import load_detector  # only with a detector: its extra may be absent

        det = load_detector(detector, model_id=model, revision=load_options.get("revision"))
    app = create_app(lm, tokenizer, options, detector=det)
    # timeout_graceful_shutdown None: on SIGTERM wait for every request in flight
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=None)
