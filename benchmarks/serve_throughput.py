"""Throughput and latency of `vrm serve` under concurrent clients, against the encoder's own speed.

Starts the real server (a subprocess on a free loopback port) for a checkpoint, then for each
number of concurrent clients sends requests of ``--rows`` (prompt, response) rows for
``--seconds`` and records rows/s and client-side latency percentiles. The reference is the
encoder (and heads) alone: ``reward_texts`` on the same rows in the server's merged batch size,
in this process, without HTTP. Overhead = 1 - server rows/s / reference rows/s.

    python benchmarks/serve_throughput.py --checkpoint runs/vrm --clients 1 4 16 \\
        --output benchmarks/results/serve_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vrm_pyro.formats import load_pairs  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_from_bundled(n: int) -> list[dict]:
    pairs = load_pairs()
    out = [{"prompt": p, "response": r} for p, a, b in zip(pairs.prompt, pairs.response_a, pairs.response_b)
           for r in (a, b)]
    return out[:n]


def run_clients(url: str, rows: list[dict], clients: int, per_request: int, seconds: float) -> dict:
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int):
        i = k * per_request
        with httpx.Client(timeout=300) as http:
            while time.perf_counter() < stop:
                batch = [rows[(i + j) % len(rows)] for j in range(per_request)]
                i += per_request * clients
                t0 = time.perf_counter()
                r = http.post(f"{url}/v1/rewards", json={"rows": batch})
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    done[0] += per_request

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"clients": clients, "rows_per_request": per_request, "requests": len(latencies), "rows": done[0],
            "seconds": elapsed, "rows_per_s": done[0] / elapsed, "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95))}


def reference_rows_per_s(checkpoint: str, rows: list[dict], batch: int, repeats: int = 2) -> float:
    """The encoder and heads alone on the same rows, ``batch`` rows per call, no HTTP, no cache."""
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.scoring import encoder_for, reward_texts

    ckpt = load_checkpoint(checkpoint)
    encoder = encoder_for(ckpt, use_cache=False)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            reward_texts(ckpt.reward_model, encoder, [r["prompt"] for r in part], [r["response"] for r in part],
                         include_nuisance=True)
        best = max(best, len(rows) / (time.perf_counter() - t0))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rows", type=int, default=8, help="Rows per request.")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pool", type=int, default=512, help="Distinct rows cycled through.")
    ap.add_argument("--output", default="benchmarks/results/serve_throughput.json")
    args = ap.parse_args(argv)
    rows = rows_from_bundled(args.pool)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "vrm_pyro.cli", "serve", "--checkpoint", args.checkpoint,
                             "--port", str(port), "--batch-window-ms", "5"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        httpx.post(f"{url}/v1/rewards", json={"rows": rows[:8]}, timeout=300).raise_for_status()  # warm-up
        results = []
        for clients in args.clients:
            res = run_clients(url, rows, clients, args.rows, args.seconds)
            metrics = httpx.get(f"{url}/metrics").json()
            res["server_mean_batch_rows"] = metrics.get("mean_batch_rows")
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for res in results:  # the reference in the same merged batch size the server used
        batch = max(args.rows, int(round(res["server_mean_batch_rows"] or args.rows)))
        res["reference_rows_per_s"] = reference_rows_per_s(args.checkpoint, rows, batch)
        res["overhead"] = 1 - res["rows_per_s"] / res["reference_rows_per_s"]
        print(json.dumps({k: res[k] for k in ("clients", "rows_per_s", "reference_rows_per_s", "overhead")}), flush=True)
    out = {"checkpoint": args.checkpoint, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch": torch.__version__, "command": "python benchmarks/serve_throughput.py " + " ".join(
               argv if argv is not None else sys.argv[1:]), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
