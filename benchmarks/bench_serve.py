"""Load test of `omniground serve` on loopback: 32 concurrent clients for a bounded time.

Runs the same model twice in one invocation -- batched (the queue may put up to --max-batch-size rows
in a forward pass) and one-at-a-time (--max-batch-size 1) -- and prints requests/s, p50/p95 latency,
error count (must be 0), mean rows per forward pass, and the batching speed-up as a ratio.

    python benchmarks/bench_serve.py                      # omniground-tiny if installed, else a random tiny model
    python benchmarks/bench_serve.py --model ckpt/ --seconds 30 --clients 32 --json

Each server runs in its own process, so the load generator never competes with it for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server(args) -> None:
    """Child process: load the model and serve it until killed."""
    import torch
    import uvicorn

    from omniground.serve import ServeSettings, create_app

    torch.manual_seed(0)
    try:
        from omniground.model import load

        og = load(args.model, device=args.device)
    except Exception as e:  # the default checkpoint is not shipped yet: the tiny config, random weights
        if args.model != "omniground-tiny":
            raise
        from omniground.model import build_tiny

        print(f"[server] {e}\n[server] benchmarking a randomly initialised tiny model (same shapes)", file=sys.stderr)
        og = build_tiny()
        og.model.eval()
        if args.device:
            og.model.to(args.device)
    settings = ServeSettings(model_name="bench", max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                             max_queue=4096, request_timeout_s=600)
    uvicorn.run(create_app(og, settings), host="127.0.0.1", port=args.port, log_level="warning")


def _image_url(i: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 120), ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def _load(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` loops each sending one request after another for `seconds`; latency per request."""
    images = [_image_url(i) for i in range(8)]
    latencies: list[float] = []
    errors: list[str] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        i = k
        while time.perf_counter() < stop_at:
            body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": images[i % len(images)]}},
                        {"type": "text", "text": f"where is object number {i % 5}?"}]}]}
            started = time.perf_counter()
            try:
                r = await http.post(url + "/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    tokens += r.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
            i += clients

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*[client(k, http) for k in range(clients)])
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 1),
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_latency_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
    }


def _batch_counts(url: str) -> tuple[float, float]:
    """(rows, forward passes) the server has run so far, from its Prometheus metrics."""
    text = httpx.get(url + "/metrics").text
    rows, passes = (re.search(rf"^omniground_batch_size_{k} (\S+)", text, re.M) for k in ("sum", "count"))
    return float(rows.group(1)) if rows else 0.0, float(passes.group(1)) if passes else 0.0


def measure(args, max_batch_size: int) -> dict:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve-only", "--port", str(port), "--model", args.model,
           "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    if args.device:
        cmd += ["--device", args.device]
    server = subprocess.Popen(cmd)  # its messages (which model it serves) go to our stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited with code {server.returncode} (its output is above)")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not start in 300 s")
            time.sleep(0.2)
        asyncio.run(_load(url, min(args.clients, 4), args.warmup, args.max_tokens))  # first-call costs
        rows0, passes0 = _batch_counts(url)
        result = asyncio.run(_load(url, args.clients, args.seconds, args.max_tokens))
        rows1, passes1 = _batch_counts(url)
        passes = passes1 - passes0
        result["mean_rows_per_forward_pass"] = round((rows1 - rows0) / passes, 2) if passes else None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"max_batch_size": max_batch_size, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="omniground-tiny")
    p.add_argument("--device", default=None)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="load time per mode")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_only:
        return run_server(args)

    batched = measure(args, args.max_batch_size)
    single = measure(args, 1)
    speedup = batched["requests_per_s"] / single["requests_per_s"] if single["requests_per_s"] else float("nan")
    report = {"model": args.model, "clients": args.clients, "max_tokens": args.max_tokens,
              "cpu_count": os.cpu_count(), "batched": batched, "one_at_a_time": single,
              "batching_speedup": round(speedup, 2)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"model {args.model}, {args.clients} clients, {args.seconds:g} s per mode, max_tokens {args.max_tokens}")
        print(f"{'mode':<16}{'req/s':>8}{'tok/s':>9}{'p50 s':>8}{'p95 s':>8}{'rows/pass':>11}{'errors':>8}")
        for name, r in (("batched", batched), ("one-at-a-time", single)):
            print(f"{name:<16}{r['requests_per_s']:>8}{r['tokens_per_s']:>9}{r['p50_latency_s']:>8}"
                  f"{r['p95_latency_s']:>8}{r['mean_rows_per_forward_pass']:>11}{r['errors']:>8}")
        print(f"batching speed-up: {speedup:.2f}x requests/s")
    if batched["errors"] or single["errors"]:
        print(f"ERRORS: {batched['first_error'] or single['first_error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
