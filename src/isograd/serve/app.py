"""The FastAPI app of `isograd serve`: OpenAI endpoints with uncertainty, health, metrics, page.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI schema; each choice
carries an ``uncertainty`` object), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus text) and ``GET /`` (the page). Every error is an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}``: 400 for bad input (naming the field),
401 for a wrong API key, 429 when the queue is full, 503 past the deadline, 500 when the
model failed on that one request.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import Batcher, Expired, QueueFull
from .engine import Completion, Engine
from .metrics import Metrics
from .page import page_html
from .schema import ApiError, Job, ServeOptions, context_length, parse_job

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, read up to `limit` bytes (chunked bodies included).

    Raises:
        ApiError: a body above the limit, or not JSON (400).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(f"body: {declared} bytes, above the limit of {limit}", param="body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"body: above the limit of {limit} bytes", param="body")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(f"body: malformed JSON ({e})", param="body", code="invalid_json") from None


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    # constant time: the comparison does not reveal how much of the key matched
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise ApiError("invalid or missing API key (Authorization: Bearer <key>)",
                       status=401, code="invalid_api_key")


def _usage(job: Job, c: Completion) -> dict[str, int]:
    n = len(c.token_ids)
    return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": n,
            "total_tokens": len(job.prompt_ids) + n}


def response_body(kind: str, job: Job, c: Completion, model_name: str) -> dict[str, Any]:
    """The OpenAI response of a chat (``kind="chat"``) or completion request."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": c.finish_reason, "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": c.text}
    else:
        choice["text"] = c.text
    if c.uncertainty is not None:
        choice["uncertainty"] = c.uncertainty
    prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
            "model": model_name, "system_fingerprint": None, "choices": [choice],
            "usage": _usage(job, c)}


def _error(e: ApiError, metrics: Metrics) -> JSONResponse:
    metrics.errors.labels(e.kind).inc()
    return JSONResponse(e.body(), status_code=e.status)


def create_app(model: Any, tokenizer: Any, options: ServeOptions, *,
               detector: Any = None) -> FastAPI:
    """The server's ASGI app around one loaded model.

    Args:
        model, tokenizer: the causal LM (fixed for the app's life).
        options: names, limits and batching (`ServeOptions`).
        detector: None, or an object with ``predict(rows) -> out`` (``out.p_error``,
            ``out.abstain``) such as `isograd.detect.load_detector`'s.

    Returns:
        A FastAPI app; its lifespan starts and stops the batching loop.
    """
    metrics = Metrics()
    engine = Engine(model, tokenizer, uncertainty=options.uncertainty,
                    prediction=options.prediction, sigma2=options.sigma2, detector=detector)
    batcher = Batcher(engine.run, max_batch_size=options.max_batch_size,
                      max_wait_ms=options.max_wait_ms, queue_size=options.queue_size,
                      metrics=metrics)
    context = context_length(model, tokenizer)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="isograd serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher, app.state.options = batcher, options

    async def complete(request: Request, kind: str, endpoint: str) -> Response:
        start, status = time.perf_counter(), 200
        try:
            _check_key(request, options.api_key)
            body = await read_json(request, options.max_body_bytes)
            job = parse_job(body, kind, tokenizer=tokenizer, options=options, context=context)
            try:
                result = await batcher.submit(job, options.request_timeout_s)
            except QueueFull as e:
                raise ApiError(f"the server is busy: {e}; retry later", status=429,
                               kind="rate_limit_error", code="queue_full") from None
            except Expired as e:
                raise ApiError(str(e), status=503, kind="server_error",
                               code="timeout") from None
            except ApiError:
                raise
            except Exception as e:  # noqa: BLE001 - the model failed on this request alone
                raise ApiError(f"the model failed on this request: {type(e).__name__}: {e}",
                               status=500, kind="server_error", code="model_error") from None
            return JSONResponse(response_body(kind, job, result, options.model_name))
        except ApiError as e:
            status = e.status
            return _error(e, metrics)
        finally:
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    @app.post(CHAT)
    async def chat(request: Request) -> Response:
        return await complete(request, "chat", CHAT)

    @app.post(COMPLETIONS)
    async def completions(request: Request) -> Response:
        return await complete(request, "completion", COMPLETIONS)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            _check_key(request, options.api_key)
        except ApiError as e:
            return _error(e, metrics)
        return JSONResponse({"object": "list", "data": [
            {"id": options.model_name, "object": "model", "created": 0, "owned_by": "isograd",
             "detector": detector is not None}]})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": options.model_name, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
        text, ctype = metrics.render()
        return Response(text, media_type=ctype)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(options.model_name, api_key=options.api_key is not None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(ApiError(str(exc.detail), status=exc.status_code, kind=kind), metrics)

    return app
