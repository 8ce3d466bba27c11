"""Serving for a team: what API keys and rate limiting cost, the three body kinds, two models at once vs each
alone, and a version swap under load.

    python benchmarks/serve_team.py [MODEL] [--clients 32] [--requests 3000] [--rounds 3] [--swap-s 12]

MODEL defaults to the shipped `cifar10`. Each server is `cnnmode serve` on 127.0.0.1 in its own process (one torch
thread), driven from this process (asyncio + httpx, `--clients` concurrent clients, one image per request). Servers
alternate round by round and medians are quoted:
- access: the same model with no keys and no limit, vs `--api-keys` (the key checked on every request) and
  `--rate-limit` (high enough never to refuse, so its bookkeeping is what is measured); goal: <= 5% overhead;
- bodies: multipart file, JSON base64, and the raw image (`Content-Type: image/png`) on the open server;
- two models: `a=MODEL b=MODEL` driven on both at once (half the clients each) vs one model alone;
- swap: the clients predict while `POST /v1/models/a/load` loads a new version; every answer's status, the
  requests sent but never answered, and the p99 of requests that overlapped the swap.
Prints the probe before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from serve_load import free_port, wait_ready  # noqa: E402
from time_to_accuracy import probe  # noqa: E402

KEY = "bench-admin-key-0123456789abcdef"


def images(n: int = 32, size: int = 32) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def start(targets: list[str], *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnmode", "serve", *targets, "--port", str(port), "--threads", "1",
                             "--max-queue", "4096", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=ROOT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + "/readyz", "cnnmode serve")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def request(kind: str, blob: bytes) -> dict:
    """httpx keyword arguments for one image sent as `kind`."""
    if kind == "multipart":
        return {"files": [("files", ("x.png", blob, "image/png"))]}
    if kind == "json":
        return {"json": {"images": [base64.b64encode(blob).decode()], "topk": 1}}
    return {"content": blob, "headers": {"Content-Type": "image/png"}}


async def drive(url: str, paths: list[str], blobs: list[bytes], clients: int, requests: int, kind: str = "json",
                key: str | None = None, until: asyncio.Event | None = None) -> dict:
    """`requests` requests (or, with `until`, as many as fit until it is set) from `clients` clients, spread
    over `paths`; each answer's (start, end, status)."""
    done: list[tuple[float, float, int]] = []
    counter = iter(range(10**9 if until else requests))
    auth = {"X-API-Key": key} if key else {}

    async def client(http: httpx.AsyncClient, c: int) -> None:
        for i in counter:
            if until is not None and until.is_set():
                return
            args = request(kind, blobs[i % len(blobs)])
            args["headers"] = args.get("headers", {}) | auth
            t = time.perf_counter()
            try:
                status = (await http.post(url + paths[c % len(paths)], timeout=60, **args)).status_code
            except httpx.HTTPError:
                status = 0
            done.append((t, time.perf_counter(), status))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, c) for c in range(clients)))
        elapsed = time.perf_counter() - start
    lat = [b - a for a, b, _ in done]
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"req_s": len(done) / elapsed, "p50": 1000 * q[49], "p99": 1000 * q[98],
            "errors": sum(s != 200 for *_, s in done), "answers": done}


def line(name: str, runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("req_s", "p50", "p99")}
    errors = sum(r["errors"] for r in runs)
    rounds = ", ".join(f"{r['req_s']:.0f}" for r in runs)
    print(f"  {name:<34} {med['req_s']:8.1f} req/s   p50 {med['p50']:6.1f} ms   p99 {med['p99']:6.1f} ms   "
          f"errors {errors}   (rounds: {rounds})")
    return med


def access(model: str, blobs, args, keys: Path) -> None:
    print(f"\naccess: {args.clients} clients, {args.requests} requests a round, JSON base64 bodies")
    flags = {"open (no keys, no limit)": (), "keys + rate limit": ("--api-keys", str(keys), "--rate-limit",
                                                                   "100000000/minute")}
    results = {name: [] for name in flags}
    for _ in range(args.rounds):
        for name in flags:
            proc, url = start([model], *flags[name])
            key = KEY if "keys" in name else None
            asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, 200, key=key))  # warm the connections
            results[name].append(asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, args.requests,
                                                   key=key)))
            stop(proc)
    open_, locked = (line(n, r) for n, r in results.items())
    print(f"  overhead of keys + rate limit: {100 * (1 - locked['req_s'] / open_['req_s']):+.1f}% req/s, "
          f"p99 {locked['p99'] - open_['p99']:+.1f} ms (goal: <= 5%)")


def bodies(model: str, blobs, args) -> None:
    print(f"\nbodies: {args.clients} clients on one open server, kinds alternated")
    proc, url = start([model])
    results = {k: [] for k in ("multipart", "json", "raw")}
    asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, 200))
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, args.requests, kind)))
    stop(proc)
    for kind, runs in results.items():
        line(kind, runs)


def two_models(model: str, blobs, args) -> None:
    print(f"\ntwo models: {args.clients} clients in all")
    results = {"a alone": [], "a and b at once (both)": []}
    for _ in range(args.rounds):
        proc, url = start([model])
        asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, 200))
        results["a alone"].append(asyncio.run(drive(url, ["/v1/predict"], blobs, args.clients, args.requests)))
        stop(proc)
        proc, url = start([f"a={model}", f"b={model}"])
        paths = ["/v1/models/a/predict", "/v1/models/b/predict"]
        asyncio.run(drive(url, paths, blobs, args.clients, 200))
        results["a and b at once (both)"].append(asyncio.run(drive(url, paths, blobs, args.clients, args.requests)))
        stop(proc)
    for name, runs in results.items():
        line(name, runs)


def swap(model: str, blobs, args, keys: Path) -> None:
    print(f"\nswap: {args.clients} clients for {args.swap_s:g} s; POST /v1/models/a/load at the middle")
    proc, url = start([f"a={model}"], "--api-keys", str(keys))

    async def run() -> tuple[dict, float, float, int]:
        until = asyncio.Event()
        load = asyncio.create_task(drive(url, ["/v1/models/a/predict"], blobs, args.clients, 0, key=KEY,
                                         until=until))
        await asyncio.sleep(args.swap_s / 2)
        t0 = time.perf_counter()
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/v1/models/a/load", headers={"X-API-Key": KEY}, timeout=300)
        t1 = time.perf_counter()
        await asyncio.sleep(args.swap_s / 2)
        until.set()
        return await load, t0, t1, r.status_code

    result, t0, t1, code = asyncio.run(run())
    after = httpx.get(f"{url}/v1/models/a", headers={"X-API-Key": KEY}).json()["version"]
    stop(proc)
    answers = result["answers"]
    during = [b - a for a, b, _ in answers if b >= t0 and a <= t1 + 0.5]
    statuses = {s: sum(x == s for *_, x in answers) for s in sorted({x for *_, x in answers})}
    print(f"  load answered {code} in {t1 - t0:.1f} s; version now {after}")
    print(f"  requests answered {len(answers)}, statuses {statuses}, dropped (status 0) {statuses.get(0, 0)}")
    print(f"  p99 overall {result['p99']:.1f} ms; p99 of the {len(during)} requests during the swap "
          f"{1000 * statistics.quantiles(during, n=100, method='inclusive')[98]:.1f} ms; "
          f"{result['req_s']:.0f} req/s overall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="cifar10")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--swap-s", type=float, default=12.0)
    ap.add_argument("--only", nargs="+", choices=["access", "bodies", "two", "swap"],
                    default=["access", "bodies", "two", "swap"])
    args = ap.parse_args()
    print(f"probe before: {probe()}", flush=True)
    blobs = images()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.txt"
        keys.write_text(f"{KEY} admin\n")
        if "access" in args.only:
            access(args.model, blobs, args, keys)
        if "bodies" in args.only:
            bodies(args.model, blobs, args)
        if "two" in args.only:
            two_models(args.model, blobs, args)
        if "swap" in args.only:
            swap(args.model, blobs, args, keys)
    print(f"\nprobe after: {probe()}")


if __name__ == "__main__":
    main()
