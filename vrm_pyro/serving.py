"""``vrm serve``: an HTTP reward server for RL and best-of-N loops (FastAPI + uvicorn).

One model instance answers every request. Requests that arrive within a short window
(``batch_window_ms``) are merged into one batch of at most ``max_batch_tokens`` (estimated as
characters / 4; a larger request runs alone), which the encoder embeds in length-sorted
sub-batches to limit padding, so concurrent clients share forward passes. Scoring runs in a
worker thread, never on the event loop.

Endpoints
---------
``POST /get_reward``
    OpenRLHF's remote reward-model protocol (``--remote_rm_url http://HOST:PORT/get_reward``):
    ``{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": ...}`` ->
    ``{"rewards": [...], "scores": [...], "extra_logs": {"reward_std": [...], "reward_lcb": [...]}}``.
    The response is ``query`` with its leading ``prompt`` removed (and end-of-sequence / padding
    tokens the policy's tokenizer left at the end, given by ``--strip-suffixes``); ``rewards`` is the
    field ``--openrlhf-reward`` names (the posterior mean ``reward``, the pessimistic ``reward_lcb``,
    or the judge-facing ``reward_total``).
``POST /v1/rewards``
    ``{"rows": [{"prompt": ..., "response": ...}, ...]}`` -> ``{"results": [{"reward", "reward_std",
    "reward_lcb", "weights"}, ...]}``, the fields ``vrm score`` writes.
``GET /health``, ``GET /metrics``
    Liveness and the checkpoint; requests, rows, batches, errors and latency percentiles.

An empty response (a policy that stopped at once) is scored like any other, as ``vrm score`` and the TRL reward
function score it; an empty prompt is a bad request.

Limits and safety: the request body (``max_body_bytes``), rows per request (``max_rows``),
characters per text (``max_chars``) and time per request (``timeout_s``) are bounded; a bearer
token (``--token`` or ``VRM_SERVE_TOKEN``) is required when set; the server binds 127.0.0.1 unless
told otherwise. A bad request gets a 4xx with a message naming what was wrong; a failure while
scoring gets a 500 for that request only.
"""


import asyncio
import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from vrm_pyro.errors import ConfigError


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class ServeConfig:
    """Options of ``vrm serve`` (each is a flag: ``--max-rows`` is ``max_rows``)."""

    checkpoint: str = _field("runs/vrm", "Checkpoint (or run directory) to serve.")
    host: str = _field("127.0.0.1", "Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = _field(5000, "Port.")
    device: str = _field("cpu", "cpu or cuda[:N].")
    token: str | None = _field(None, "Bearer token clients must send; without it, $VRM_SERVE_TOKEN; with neither, no auth.")
    kappa: float = _field(1.0, "reward_lcb = reward - kappa * reward_std.")
    num_samples: int = _field(32, "Monte Carlo samples of the guide.")
    openrlhf_reward: str = _field("reward", "The value /get_reward returns as 'rewards': reward, reward_lcb or "
                                            "reward_total (authentic reward plus the judge's nuisance term).")
    strip_suffixes: str = _field("</s>,<|endoftext|>,<|im_end|>,<|eot_id|>,<pad>,[PAD],[SEP]",
                                 "Comma-separated tokens removed from the end of OpenRLHF queries.")
    batch_window_ms: float = _field(5.0, "How long a batch waits for more requests.")
    max_batch_tokens: int = _field(32768, "Largest merged batch, in estimated tokens (characters / 4).")
    max_body_bytes: int = _field(8 << 20, "Largest request body.")
    max_rows: int = _field(1024, "Most rows per request.")
    max_chars: int = _field(32768, "Most characters per prompt or response.")
    timeout_s: float = _field(120.0, "Longest a request may wait for its scores.")
    cache_dir: str | None = _field(None, "Embedding cache directory (only the encoder files are read).")

    def __post_init__(self) -> None:
        if self.openrlhf_reward not in ("reward", "reward_lcb", "reward_total"):
            raise ConfigError(f"ServeConfig.openrlhf_reward must be reward, reward_lcb or reward_total, got "
                              f"{self.openrlhf_reward!r}")
        if min(self.max_rows, self.max_chars, self.max_body_bytes, self.max_batch_tokens) < 1 or self.timeout_s <= 0:
            raise ConfigError("ServeConfig: limits must be positive")


class RequestError(Exception):
    """A client error: ``status`` (4xx) and a message naming what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Metrics:
    """Counters and a window of request latencies (thread-safe)."""

    def __init__(self, window: int = 10_000):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=window)
        self.started = time.time()

    def add(self, **counts) -> None:
        with self.lock:
            self.counts.update(counts)

    def latency(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def snapshot(self) -> dict:
        with self.lock:
            lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(0)
            counts = dict(self.counts)
        pct = {f"latency_ms_p{q}": float(np.percentile(lat, q)) if len(lat) else None for q in (50, 95, 99)}
        batches = counts.get("batches", 0)
        return {"uptime_s": time.time() - self.started, **counts, **pct,
                "mean_batch_rows": counts.get("batch_rows", 0) / batches if batches else None}


class RewardService:
    """The loaded checkpoint and its encoder: ``score(prompts, responses) -> list[dict]`` (one thread)."""

    def __init__(self, cfg: ServeConfig):
        from vrm_pyro.checkpoint import load_checkpoint
        from vrm_pyro.scoring import encoder_for

        self.cfg = cfg
        self.checkpoint = load_checkpoint(cfg.checkpoint, device=cfg.device)
        self.model = self.checkpoint.reward_model
        self.encoder = encoder_for(self.checkpoint, cache_dir=cfg.cache_dir, device=cfg.device, use_cache=False)

    def score(self, prompts: list[str], responses: list[str]) -> list[dict]:
        from vrm_pyro.scoring import output_row, reward_texts

        out = reward_texts(self.model, self.encoder, prompts, responses, num_samples=self.cfg.num_samples,
                           include_nuisance=True)
        return [output_row(out, i, self.cfg.kappa) for i in range(len(prompts))]


class DynamicBatcher:
    """Merges concurrent requests into batches: a batch waits up to ``window_s`` for more rows, up to
    ``max_tokens`` estimated tokens; one worker scores batches one at a time in a thread."""

    def __init__(self, score, metrics: Metrics, *, window_s: float, max_tokens: int):
        self.score, self.metrics = score, metrics
        self.window_s, self.max_tokens = window_s, max_tokens
        self.queue: asyncio.Queue = asyncio.Queue()

    @staticmethod
    def tokens(rows: list[tuple[str, str]]) -> int:
        return sum((len(p) + len(r)) // 4 + 1 for p, r in rows)

    async def submit(self, rows: list[tuple[str, str]]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((rows, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            tokens = self.tokens(items[0][0])
            deadline = time.perf_counter() + self.window_s
            while tokens < self.max_tokens:
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), wait)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                tokens += self.tokens(item[0])
            items = [(rows, fut) for rows, fut in items if not fut.done()]  # requests that timed out are dropped
            if not items:
                continue
            flat = [row for rows, _ in items for row in rows]
            try:
                results = await asyncio.to_thread(self.score, [p for p, _ in flat], [r for _, r in flat])
            except Exception as exc:  # the batch fails, the server keeps serving
                self.metrics.add(errors=len(items))
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.metrics.add(batches=1, batch_rows=len(flat))
            start = 0
            for rows, fut in items:
                if not fut.done():
                    fut.set_result(results[start:start + len(rows)])
                start += len(rows)


def _strings(value, name: str, cfg: ServeConfig) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(422, f"field '{name}' must be a list of strings")
    if len(value) > cfg.max_rows:
        raise RequestError(413, f"field '{name}' has {len(value)} rows; at most {cfg.max_rows} per request (--max-rows)")
    return value


def _check_texts(rows: list[tuple[str, str]], cfg: ServeConfig) -> None:
    from vrm_pyro.formats import invalid_unicode

    for i, (p, r) in enumerate(rows):
        for name, text in (("prompt", p), ("response", r)):
            if len(text) > cfg.max_chars:
                raise RequestError(413, f"row {i}: {name} has {len(text)} characters; at most {cfg.max_chars} "
                                        "(--max-chars)")
            if name == "prompt" and not text.strip():  # an empty *response* is scored: a policy may emit one
                raise RequestError(422, f"row {i}: {name} is empty")
            if invalid_unicode(text):
                raise RequestError(422, f"row {i}: {name}: {invalid_unicode(text)}")


def parse_rows(body: dict, cfg: ServeConfig) -> list[tuple[str, str]]:
    """``{"rows": [{"prompt", "response"}, ...]}`` -> (prompt, response) pairs, checked against the limits."""
    rows = body.get("rows")
    if not isinstance(rows, list) or not rows:
        raise RequestError(422, "expected {\"rows\": [{\"prompt\": ..., \"response\": ...}, ...]} with at least one row")
    if len(rows) > cfg.max_rows:
        raise RequestError(413, f"{len(rows)} rows; at most {cfg.max_rows} per request (--max-rows)")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise RequestError(422, f"row {i}: expected an object with string fields 'prompt' and 'response'")
        out.append((row["prompt"], row["response"]))
    _check_texts(out, cfg)
    return out


def parse_openrlhf(body: dict, cfg: ServeConfig) -> list[tuple[str, str]]:
    """OpenRLHF's ``{"query", "prompts"}`` -> (prompt, response) pairs: the response is the query after its
    prompt, with trailing special tokens removed."""
    queries = _strings(body.get("query", body.get("queries")), "query", cfg)
    prompts = body.get("prompts")
    if prompts is None:
        raise RequestError(422, "field 'prompts' is missing: VRM scores a response given its prompt (OpenRLHF sends "
                                "both; without them use POST /v1/rewards)")
    prompts = _strings(prompts, "prompts", cfg)
    if len(prompts) != len(queries):
        raise RequestError(422, f"{len(queries)} queries but {len(prompts)} prompts")
    suffixes = [s for s in cfg.strip_suffixes.split(",") if s]
    rows = []
    for q, p in zip(queries, prompts):
        response = q[len(p):] if q.startswith(p) else q
        changed = True
        while changed:
            changed = False
            response = response.rstrip()
            for s in suffixes:
                if response.endswith(s):
                    response, changed = response[: -len(s)], True
        rows.append((p, response.strip()))
    _check_texts(rows, cfg)
    return rows


def create_app(cfg: ServeConfig, service: RewardService | None = None):
    """The FastAPI application (``service`` defaults to loading ``cfg.checkpoint``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    service = service or RewardService(cfg)
    metrics = Metrics()
    token = cfg.token or os.environ.get("VRM_SERVE_TOKEN") or None
    state: dict = {}

    async def lifespan(app):
        batcher = DynamicBatcher(service.score, metrics, window_s=cfg.batch_window_ms / 1000,
                                 max_tokens=cfg.max_batch_tokens)
        state["batcher"] = batcher
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="vrm-pyro reward server", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        metrics.add(**{f"http_{status}": 1})
        return JSONResponse({"error": message}, status_code=status)

    async def read_json(request: Request) -> dict:
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer ...)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise RequestError(413, f"request body of {length} bytes; at most {cfg.max_body_bytes} (--max-body-bytes)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise RequestError(413, f"request body over {cfg.max_body_bytes} bytes (--max-body-bytes)")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError(422, "the body must be a JSON object")
        return data

    async def answer(request: Request, parse, respond) -> JSONResponse:
        start = time.perf_counter()
        try:
            rows = parse(await read_json(request), cfg)
            results = await asyncio.wait_for(state["batcher"].submit(rows), cfg.timeout_s)
        except RequestError as exc:
            return error(exc.status, exc.message)
        except asyncio.TimeoutError:
            return error(504, f"scoring took longer than {cfg.timeout_s} s (--timeout-s)")
        except Exception as exc:  # scoring failed: this request only
            return error(500, f"scoring failed: {type(exc).__name__}: {exc}")
        metrics.add(requests=1, rows=len(rows))
        metrics.latency(time.perf_counter() - start)
        return JSONResponse(respond(results))

    @app.post("/v1/rewards")
    async def rewards(request: Request):
        return await answer(request, parse_rows, lambda results: {"results": results})

    @app.post("/get_reward")
    async def get_reward(request: Request):
        def respond(results):
            values = [r[cfg.openrlhf_reward] if r.get(cfg.openrlhf_reward) is not None else r["reward"] for r in results]
            return {"rewards": values, "scores": values,
                    "extra_logs": {"reward_std": [r["reward_std"] for r in results],
                                   "reward_lcb": [r["reward_lcb"] for r in results]}}

        return await answer(request, parse_openrlhf, respond)

    @app.get("/health")
    async def health():
        return {"status": "ok", "checkpoint": cfg.checkpoint, "kind": service.model.kind}

    @app.get("/metrics")
    async def get_metrics():
        return metrics.snapshot()

    return app


def serve(cfg: ServeConfig) -> None:
    """Load the checkpoint and serve until interrupted."""
    import uvicorn

    # uvicorn's start-up lines say when and where it listens ("Uvicorn running on http://..."); no line per request
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info", access_log=False)


__all__ = ["DynamicBatcher", "Metrics", "RequestError", "RewardService", "ServeConfig", "create_app", "parse_openrlhf",
           "parse_rows", "serve"]
