"""The HTTP service: OpenAI-compatible chat completions with structured grounding, a web page, metrics.

    app = create_app(omniground.load("omniground-tiny"), ServeSettings(api_key="secret"))
    uvicorn.run(app)

Routes: `POST /v1/chat/completions` (stream or not), `GET /v1/models`, `GET /` (the web page),
`GET /health`, `GET /metrics` (Prometheus text). Every answer's message carries a `grounding`
object (boxes in pixels and normalised, spans in seconds, each with its phrase and score), so
callers never parse text. Every error is an OpenAI-style body: {"error": {message, type, param, code}}.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from omniground.serve.batcher import Batcher, QueueFull
from omniground.serve.generation import Answer, Row, Sampling, grounding_json, run_batch
from omniground.serve.inputs import InputError, MediaPolicy, to_conversation


@dataclass
class ServeSettings:
    model_name: str = "omniground-tiny"  # the id clients send as `model` and see at /v1/models
    api_key: str | None = None  # bearer token required on /v1/*; None = open
    allow_media_dir: Path | None = None  # local files clients may name; None = data URLs only
    max_batch_size: int = 16  # rows per forward pass
    max_wait_ms: float = 10.0  # how long an idle model waits for a batch to fill
    max_queue: int = 256  # rows waiting; beyond this requests get 503
    max_request_bytes: int = 32 * 1024 * 1024  # whole HTTP body, media included
    request_timeout_s: float = 120.0
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048
    max_n: int = 8


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completions request we honour; unknown fields are ignored, as OpenAI's SDKs expect."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Any]
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None or 0 -> greedy
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class _Metrics:
    """Prometheus metrics in the app's own registry (two apps in one process never collide)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("omniground_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("omniground_request_latency_seconds", "Time to the response's first byte",
                                 ["route"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.batch_size = Histogram("omniground_batch_size", "Rows per forward pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_seconds = Histogram("omniground_batch_seconds", "Seconds per forward pass (generate call)",
                                       registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("omniground_completion_tokens_total", "Generated tokens", registry=r)
        self.queue_depth = Gauge("omniground_queue_depth", "Rows waiting for the model", registry=r)

    def on_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_seconds.observe(seconds)


class _BodyLimit:
    """Reject bodies over `limit` bytes with 413 before any parsing (declared or chunked length alike)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks, size = [], 0
        while not too_big:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > self.limit
            if not message.get("more_body", False):
                break
        if too_big:
            response = error_body(f"request body is larger than {self.limit:,} bytes", 413, code="request_too_large")
            return await response(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app(og, settings: ServeSettings | None = None) -> FastAPI:
    """The service around a loaded `OmniGround` (its `chat_batch` answers each batch of rows)."""
    settings = settings or ServeSettings()
    config = og.model.config
    policy = MediaPolicy(settings.allow_media_dir, num_video_frames=config.num_video_frames,
                         audio_sample_rate=config.audio_sample_rate,
                         max_media_bytes=settings.max_request_bytes)
    metrics = _Metrics()
    batcher = Batcher(lambda rows: run_batch(og, rows), settings.max_batch_size,
                      settings.max_wait_ms / 1000, settings.max_queue, on_batch=metrics.on_batch)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="omniground", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    # ---- errors: always an OpenAI-style body ----
    @app.exception_handler(InputError)
    async def _input_error(request: Request, e: InputError):
        return error_body(e.message, e.status, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return error_body("request body is not valid JSON", 400, code="invalid_json")
        param = ".".join(loc) or None
        return error_body(f"{param + ': ' if param else ''}{first['msg']}", 400, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return error_body(str(e.detail), e.status_code)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, e: Exception):
        return error_body(f"internal error: {type(e).__name__}", 500)

    # ---- middleware, innermost first: the body limit, then metrics (which so also count 413s) ----
    app.add_middleware(_BodyLimit, limit=settings.max_request_bytes)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    def authorised(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise InputError("missing or wrong API key (send 'Authorization: Bearer <key>')", status=401,
                             code="invalid_api_key")

    # ---- routes ----
    page = resources.files("omniground.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, "queue_depth": batcher.depth,
                "auth": settings.api_key is not None}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    model_card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "omniground"}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorised)])
    async def model(model_id: str):
        if model_id != settings.model_name:
            raise InputError(f"model {model_id!r} does not exist", "model", 404, "model_not_found")
        return model_card

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat_completions(req: ChatRequest):
        rows = await _rows_for(req)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return _stream(req, rows, request_id)
        try:
            futures = batcher.submit(rows)
        except QueueFull as e:
            raise InputError(f"server is busy: {e}; retry later", status=503, code="overloaded") from None
        try:
            answers = await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout_s)
        except asyncio.TimeoutError:
            _cancel(rows)
            raise InputError(f"request timed out after {settings.request_timeout_s:g} s", status=504,
                             code="timeout") from None
        except Exception as e:
            raise InputError(f"generation failed: {type(e).__name__}: {_first_line(e)}", status=500) from None
        metrics.tokens.inc(sum(a.completion_tokens for a in answers))
        return {
            "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": settings.model_name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": a.text, "grounding": grounding_json(a)},
                 "finish_reason": _finish(a), "logprobs": None}
                for i, a in enumerate(answers)
            ],
            "usage": _usage(answers),
        }

    async def _rows_for(req: ChatRequest) -> list[Row]:
        if req.model != settings.model_name:
            raise InputError(f"model {req.model!r} does not exist; this server serves {settings.model_name!r}",
                             "model", 404, "model_not_found")
        if req.n > settings.max_n:
            raise InputError(f"n must be at most {settings.max_n}", "n")
        max_tokens = req.max_completion_tokens or req.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise InputError(f"max_tokens must be at most {settings.max_tokens_limit}", "max_tokens")
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        if len(stop) > 4 or any(not s for s in stop):
            raise InputError("stop must be up to 4 non-empty strings", "stop")
        conv = await run_in_threadpool(to_conversation, req.messages, policy)
        temperature = req.temperature or 0.0
        top_p = req.top_p if req.top_p is not None and temperature > 0 else 1.0  # greedy ignores top_p: batch it all
        sampling = Sampling(temperature=temperature, top_p=top_p)
        return [Row(conv.messages, conv.media, conv.meta, max_tokens, stop, sampling) for _ in range(req.n)]

    def _stream(req: ChatRequest, rows: list[Row], request_id: str) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        for i, row in enumerate(rows):  # called from the model thread: hop onto the event loop
            row.on_text = lambda delta, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, delta))
        try:
            futures = batcher.submit(rows)
        except QueueFull as e:
            raise InputError(f"server is busy: {e}; retry later", status=503, code="overloaded") from None
        for i, f in enumerate(futures):
            f.add_done_callback(lambda f, i=i: events.put_nowait((i, f)))
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        created = int(time.time())

        def chunk(choices: list[dict], **extra) -> str:
            body = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                    "model": settings.model_name, "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        async def events_stream():
            deadline = loop.time() + settings.request_timeout_s
            answers: dict[int, Answer] = {}
            try:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                             for i in range(len(rows))])
                while len(answers) < len(rows):
                    i, item = await asyncio.wait_for(events.get(), max(0.0, deadline - loop.time()))
                    if isinstance(item, str):
                        yield chunk([{"index": i, "delta": {"content": item}, "finish_reason": None}])
                        continue
                    if item.cancelled() or item.exception() is not None:
                        e = item.exception() if not item.cancelled() else None
                        message = f"generation failed: {type(e).__name__}: {_first_line(e)}" if e else "cancelled"
                        yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
                        return
                    answers[i] = a = item.result()
                    metrics.tokens.inc(a.completion_tokens)
                    yield chunk([{"index": i, "delta": {"grounding": grounding_json(a)}, "finish_reason": _finish(a)}])
                if include_usage:
                    yield chunk([], usage=_usage(list(answers.values())))
                yield "data: [DONE]\n\n"
            except asyncio.TimeoutError:
                body = {"error": {"message": f"request timed out after {settings.request_timeout_s:g} s",
                                  "type": "server_error", "code": "timeout"}}
                yield f"data: {json.dumps(body)}\n\n"
            finally:  # the client left or time ran out: free the rows' places in the batch
                _cancel(rows)

        return StreamingResponse(events_stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _cancel(rows: list[Row]) -> None:
    for r in rows:
        r.cancelled.set()


def _finish(a: Answer) -> str:
    return "length" if a.finish_reason == "length" else "stop"


def _usage(answers: list[Answer]) -> dict:
    prompt = answers[0].prompt_tokens if answers else 0
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _first_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200] if e is not None else ""
