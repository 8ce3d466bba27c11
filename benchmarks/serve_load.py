"""Serving under load: `cnnmode serve` with dynamic batching, with batches of one, and LitServe as the peer.

    pip install litserve==0.2.19     # the peer
    python benchmarks/serve_load.py RUN_OR_ARTIFACT [--clients 1 8 32] [--requests 10000] [--rounds 3]
    python benchmarks/serve_load.py RUN_224PX --parity          # LitServe's own benchmark configuration
    python benchmarks/serve_load.py RUN --rate 50 100 200       # open loop: Poisson arrivals at these req/s

Starts each server on 127.0.0.1 in its own process, then drives it from this process (asyncio + httpx, one image
per request as JSON base64, real images from the run's test split when it has them); the servers alternate round
by round and medians are quoted. Closed loop (default): `--clients` concurrent clients, each sending its next
request when the last is answered. Open loop (`--rate`): requests leave at a fixed mean rate with exponential gaps
(Poisson arrivals) whether or not earlier ones were answered, so a server slower than the rate shows its queue in
the latency. `--parity` is LitServe's published configuration: a 224 px ResNet-18, batches of up to 8 within 10 ms,
50 concurrent clients. `cnnmode serve` runs with its default backend (`auto`) and, as `cnnmode eager`, with the
same fp32 eager model as the LitServe peer. Where the machine has 4 cores or more, the load generator is pinned to
the last core and the servers to the others. Prints req/s, p50/p95/p99 latency and errors per server and load, the
offline throughput of the same model (the eager backend at batch 32, as `cnnmode bench` measures it) and the probe
before and after.
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

def cnnmode_server(backend: str, batch_1: bool = False):
    """The command line of `cnnmode serve` with `backend` (batches up to the cap, or of one)."""
    def command(target: str, port: int, threads: int, batch: int, wait_ms: float) -> list[str]:
        return ["-m", "cnnmode", "serve", target, "--port", str(port), "--max-batch-size", "1" if batch_1 else
                str(batch), "--max-wait-ms", str(wait_ms), "--threads", str(threads), "--max-queue", "4096",
                "--backend", backend]
    return command


def litserve_server(target: str, port: int, threads: int, batch: int, wait_ms: float) -> list[str]:
    return [str(ROOT / "benchmarks" / "litserve_peer.py"), target, "--port", str(port), "--max-batch-size",
            str(batch), "--batch-timeout", str(wait_ms / 1000), "--threads", str(threads)]


SERVERS = {"cnnmode (auto)": cnnmode_server("auto"), "cnnmode eager": cnnmode_server("eager"),
           "cnnmode eager (batch 1)": cnnmode_server("eager", batch_1=True), "litserve": litserve_server}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads(target: str, n: int = 64) -> list[str]:
    """Base64 PNGs: test images of the run when it remembers its data, else noise at the model's size."""
    from cnnmode.artifact import load_artifact
    from cnnmode.deploy.samples import sample_images
    from cnnmode.figures import to_display
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


def server_cores() -> list[int] | None:
    """The cores the servers run on when the load generator can have one of its own (4 cores or more)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[:-1] if len(cores) >= 4 else None


def start(name: str, target: str, threads: int, batch: int, wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    pinned = server_cores()
    proc = subprocess.Popen([sys.executable, *SERVERS[name](target, port, threads, batch, wait_ms)],
                            stdout=subprocess.PIPE if name == "cnnmode (auto)" else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, pinned)) if pinned else None)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + ("/health" if name.startswith("litserve") else "/readyz"), name)
    if proc.stdout is not None:
        print(f"  {proc.stdout.readline().strip()}")  # the first line names the backend auto chose
        proc.stdout.close()
    return proc, url


def wait_ready(proc: subprocess.Popen, ready_url: str, name: str) -> None:
    """Poll `ready_url` until it answers 200 (up to 2 minutes); a server that exits or never gets ready ends the
    benchmark with one line (and the end of its stderr when that was piped)."""
    for _ in range(1200):
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            tail = proc.stderr.read()[-2000:] if proc.stderr is not None else ""
            raise SystemExit(f"{name} exited during start-up (code {proc.returncode}) {tail}".rstrip())
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
    return summarise(latencies, requests / elapsed, errors)


def summarise(latencies: list[float], req_s: float, errors: int) -> dict:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"req_s": req_s, "p50": 1000 * q[49], "p95": 1000 * q[94], "p99": 1000 * q[98], "errors": errors}


async def drive_open(url: str, litserve: bool, images: list[str], rate: float, requests: int, seed: int = 0) -> dict:
    """Open loop: `requests` requests sent at `rate` per second on average with exponential gaps (Poisson
    arrivals), each timed from its planned send time, so time spent queueing in the client counts too."""
    import random

    path = "/predict" if litserve else "/v1/predict"
    gaps = random.Random(seed)
    latencies, errors = [], 0

    async def one(http: httpx.AsyncClient, i: int, planned: float) -> None:
        nonlocal errors
        body = {"image": images[i % len(images)]} if litserve else {"images": [images[i % len(images)]], "topk": 1}
        try:
            ok = (await http.post(url + path, json=body, timeout=60)).status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - planned)
        errors += not ok

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits) as http:
        start, planned, tasks = time.perf_counter(), time.perf_counter(), []
        for i in range(requests):
            planned += gaps.expovariate(rate)
            await asyncio.sleep(max(0.0, planned - time.perf_counter()))
            tasks.append(asyncio.create_task(one(http, i, planned)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return summarise(latencies, requests / elapsed, errors)


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
    ap.add_argument("--rate", type=float, nargs="+", help="open loop: mean request rates (req/s) to offer")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--parity", action="store_true", help="LitServe's configuration: batch 8, 10 ms, 50 clients")
    ap.add_argument("--threads", type=int, default=len(server_cores() or range(os.cpu_count() or 1)),
                    help="torch threads of each server")
    args = ap.parse_args()
    if args.parity:
        args.max_batch_size, args.max_wait_ms, args.clients = 8, 10.0, [50]
    pinned = server_cores()
    if pinned:
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - set(pinned))
    print(f"probe before: {probe()} img/s; servers on {'cores ' + str(pinned) if pinned else 'every core'}, load "
          f"generator {'on its own core' if pinned else 'beside them (under 4 cores: not pinned)'}")
    images = payloads(args.target)
    torch.set_num_threads(args.threads)
    offline = offline_img_s(args.target)
    print(f"offline eager at batch 32: {offline:.0f} img/s; servers batch up to {args.max_batch_size} images "
          f"within {args.max_wait_ms:g} ms")
    loads = [("rate", r) for r in args.rate] if args.rate else [("clients", n) for n in args.clients]
    results: dict[tuple[str, tuple], list[dict]] = {}
    for r in range(args.rounds):
        for name in args.servers:  # the servers alternate, round by round
            proc, url = start(name, args.target, args.threads, args.max_batch_size, args.max_wait_ms)
            litserve = name.startswith("litserve")
            try:
                for load in loads:
                    asyncio.run(drive(url, litserve, images, 8, min(200, args.requests)))  # warm
                    row = asyncio.run(drive_open(url, litserve, images, load[1], args.requests) if load[0] == "rate"
                                      else drive(url, litserve, images, load[1], args.requests))
                    results.setdefault((name, load), []).append(row)
                    print(f"round {r + 1} {name:<24} {load[1]:>5g} {load[0]}: {row['req_s']:7.1f} req/s  p50 "
                          f"{row['p50']:6.1f}  p95 {row['p95']:6.1f}  p99 {row['p99']:6.1f} ms  errors {row['errors']}",
                          flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"\nmedians over {args.rounds} rounds, {args.requests} requests each:")
    print("| server | load | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for (name, load), rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
        print(f"| {name} | {load[1]:g} {load[0]} | {med['req_s']:.1f} | {med['p50']:.1f} | {med['p95']:.1f} | "
              f"{med['p99']:.1f} | {sum(x['errors'] for x in rows)} |")
    _ratios(results, offline)
    print(f"probe after: {probe()} img/s")


def _ratios(results: dict, offline: float) -> None:
    """The targets at the heaviest load: cnnmode against LitServe and batch-1 serving, and against offline."""
    heaviest = max(load for _, load in results)
    med = {name: statistics.median(x["req_s"] for x in rows) for (name, load), rows in results.items()
           if load == heaviest}
    for ours in ("cnnmode (auto)", "cnnmode eager"):
        if ours not in med:
            continue
        print(f"at {heaviest[1]:g} {heaviest[0]}, {ours}: serving / offline eager {med[ours] / offline:.0%}", end="")
        for peer in ("cnnmode eager (batch 1)", "litserve"):
            if peer in med:
                print(f", / {peer} {med[ours] / med[peer]:.2f}x", end="")
        print()


if __name__ == "__main__":
    main()
