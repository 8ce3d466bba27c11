"""Serving under load: `cnnmode serve` with dynamic batching, with batches of one, and LitServe as the peer.

    pip install litserve==0.2.19     # the peer
    python benchmarks/serve_load.py RUN_OR_ARTIFACT [--clients 1 8 32] [--requests 10000] [--rounds 3]

Starts each server on 127.0.0.1 in its own process, then drives it from this process with bounded concurrency
(asyncio + httpx, one image per request as JSON base64, real images from the run's test split when it has them);
the servers alternate round by round and medians are quoted. Prints req/s, p50/p95/p99 latency and errors per
server and client count, the offline throughput of the same model (the eager backend at batch 32, as `cnnmode
bench` measures it) and the probe before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from time_to_accuracy import probe  # noqa: E402

SERVERS = {
    "cnnmode (batch <= 32)": lambda target, port, t: ["-m", "cnnmode", "serve", target, "--port", str(port),
                                                       "--max-batch-size", "32", "--max-wait-ms", "5",
                                                       "--threads", str(t), "--max-queue", "4096"],
    "cnnmode (batch 1)": lambda target, port, t: ["-m", "cnnmode", "serve", target, "--port", str(port),
                                                   "--max-batch-size", "1", "--threads", str(t), "--max-queue", "4096"],
    "litserve (batch <= 32)": lambda target, port, t: [str(ROOT / "benchmarks" / "litserve_peer.py"), target,
                                                        "--port", str(port), "--max-batch-size", "32",
                                                        "--batch-timeout", "0.005", "--threads", str(t)],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads(target: str, n: int = 64) -> list[str]:
    """Base64 PNGs: test images of the run when it remembers its data, else noise at the model's size."""
    from cnnmode.artifact import load_artifact
    from cnnmode.deploy.samples import sample_images
    from cnnmode.evaluation.plotting import to_display
    from cnnmode.rundir import resolve_target

    where = resolve_target(target)
    art = load_artifact(where)
    found = sample_images(where, art, None, n, "test")
    p = art.preprocess
    pixels = (to_display(found[0], p["mean"], p["std"]) * 255).byte().numpy() if found else \
        torch.randint(0, 255, (n, p["img_size"], p["img_size"], 3), dtype=torch.uint8).numpy()
    out = []
    for arr in pixels:
        buf = io.BytesIO()
        Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(buf, "PNG")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def start(name: str, target: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, *SERVERS[name](target, port, threads)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    ready = "/health" if name.startswith("litserve") else "/readyz"
    for _ in range(1200):
        try:
            if httpx.get(url + ready, timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited during start-up (code {proc.returncode})")
        time.sleep(0.1)
    raise SystemExit(f"{name} never became ready")


async def drive(url: str, litserve: bool, images: list[str], clients: int, requests: int) -> dict:
    """`requests` requests from `clients` concurrent clients; req/s, latency percentiles (ms), errors."""
    path = "/predict" if litserve else "/v1/predict"
    latencies, errors, counter = [], 0, iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            body = {"image": images[i % len(images)]} if litserve else {"images": [images[i % len(images)]], "topk": 1}
            t = time.perf_counter()
            try:
                r = await http.post(url + path, json=body, timeout=60)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"req_s": requests / elapsed, "p50": 1000 * q[49], "p95": 1000 * q[94], "p99": 1000 * q[98],
            "errors": errors}


def offline_img_s(target: str, batch: int = 32) -> float:
    """Images/s of the eager backend at `batch`, timed as `cnnmode bench` times it."""
    from cnnmode.artifact import load_artifact
    from cnnmode.deploy.bench import time_batches
    from cnnmode.deploy.runtime import load_runner

    art = load_artifact(target)
    p = art.preprocess
    return time_batches(load_runner(art, "eager"), torch.randn(batch, p["channels"], p["img_size"], p["img_size"]),
                        budget_s=3.0)["img_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="a run folder or model.pt")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each server")
    args = ap.parse_args()
    print(f"probe before: {probe()} img/s")
    images = payloads(args.target)
    torch.set_num_threads(args.threads)
    offline = offline_img_s(args.target)
    print(f"offline eager at batch 32: {offline:.0f} img/s")
    results: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for name in args.servers:  # the servers alternate, round by round
            proc, url = start(name, args.target, args.threads)
            try:
                for n in args.clients:
                    asyncio.run(drive(url, name.startswith("litserve"), images, n, min(200, args.requests)))  # warm
                    row = asyncio.run(drive(url, name.startswith("litserve"), images, n, args.requests))
                    results.setdefault((name, n), []).append(row)
                    print(f"round {r + 1} {name:<24} {n:>3} clients: {row['req_s']:7.1f} req/s  p50 {row['p50']:6.1f}"
                          f"  p95 {row['p95']:6.1f}  p99 {row['p99']:6.1f} ms  errors {row['errors']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"\nmedians over {args.rounds} rounds, {args.requests} requests each:")
    print(f"{'server':<24} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7}")
    for (name, n), rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
        print(f"{name:<24} {n:>7} {med['req_s']:8.1f} {med['p50']:7.1f} {med['p95']:7.1f} {med['p99']:7.1f} "
              f"{sum(x['errors'] for x in rows):>7}")
    _ratios(results, offline)
    print(f"probe after: {probe()} img/s")


def _ratios(results: dict, offline: float) -> None:
    """The issue's targets at the largest client count: batching vs batch 1, vs LitServe, vs offline."""
    n = max(c for _, c in results)
    med = {name: statistics.median(x["req_s"] for x in rows) for (name, c), rows in results.items() if c == n}
    ours = med.get("cnnmode (batch <= 32)")
    if ours is None:
        return
    print(f"at {n} clients: serving / offline {ours / offline:.0%}", end="")
    for peer in ("cnnmode (batch 1)", "litserve (batch <= 32)"):
        if peer in med:
            print(f", batching / {peer} {ours / med[peer]:.2f}x", end="")
    print()


if __name__ == "__main__":
    main()
