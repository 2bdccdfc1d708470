"""Load test of the HTTP service: requests/s and latency percentiles per scenario and client count.

Scenarios: ``POST /search`` with each of ``--modes`` (default sparse and hybrid; e.g. sparse-idf), and
``POST /search/batch`` (``--batch-size`` queries per request). Each runs at every ``--concurrency``
(closed loop: each client sends its next request when the previous one is answered) for ``--duration``
seconds or ``--max-requests`` requests, whichever comes first, after ``--warmup`` untimed requests. Any
5xx is a failure (exit code 1); other errors (4xx, timeouts, refused connections) are counted apart.

With ``--index DIR`` it starts the server itself (``python -m lsr serve``, output in a log file), waits for
``GET /ready``, and reports the server's resident memory (VmRSS from /proc) before the load, after it, and
after a soak of ``--soak-queries`` sparse searches. With ``--url`` it drives a running server (no memory
figures). The client shares the machine with the server: on few cores it takes CPU from it.

SciFact, from the repository root:

    .venv/bin/python -P scripts/load_service.py \\
        --index ~/.cache/lsr-engine/indexes/scifact-17dcf63e1e3ac723 \\
        --queries ../shared/data/beir/scifact/queries.jsonl \\
        --concurrency 1,8,32 --duration 15 --soak-queries 10000 --json-out load.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

try:  # a faster event loop for the client, where installed (the 'serve' extra brings it)
    import uvloop
except ImportError:
    uvloop = None

BUILTIN_QUERIES = [
    "how do vaccines train the immune system", "microRNA regulates cancer cell growth",
    "effects of sleep deprivation on memory", "insulin resistance and type 2 diabetes",
    "gut bacteria influence on obesity", "statins lower cardiovascular risk",
    "antibiotic resistance in hospital infections", "vitamin D deficiency and bone density",
]


def load_queries(path: str | None) -> list[str]:
    """Query texts from a BEIR queries.jsonl ({"_id", "text"} per line), or the built-in handful."""
    if path is None:
        return BUILTIN_QUERIES
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    if not texts:
        sys.exit(f"{path}: no queries")
    return texts


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of sorted values, linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    x = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(x), math.ceil(x)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (x - lo)


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (Linux /proc), None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RawClient:
    """HTTP/1.1 keep-alive client on asyncio streams: each concurrent request takes an idle connection (or
    opens one) and gives it back after reading the answer (Content-Length or chunked)."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlsplit(url)
        self.host, self.port, self.timeout = u.hostname or "127.0.0.1", u.port or 80, timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._host = f"Host: {self.host}:{self.port}\r\n".encode()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; OSError / asyncio errors for a dropped or refused connection."""
        conn = None
        while self.idle and conn is None:
            conn = self.idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():  # the server closed it while idle (keep-alive)
                conn[1].close()
                conn = None
        if conn is None:
            conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            writer.write(head + b"\r\n" + (body or b""))
            async with asyncio.timeout(self.timeout):
                status, keep, data = await self._answer(reader)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append(conn)
        else:
            writer.close()
        return status, data

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        keep = headers.get(b"connection") != b"close"
        if b"content-length" in headers:
            return status, keep, await reader.readexactly(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readuntil(b"\r\n")
            await reader.readuntil(b"\r\n")
            return status, keep, b"".join(chunks)
        return status, False, await reader.read()

    async def post(self, path: str, body: bytes) -> int:
        return (await self.request("POST", path, body))[0]

    async def get_json(self, path: str) -> tuple[int, dict | None]:
        status, data = await self.request("GET", path)
        return status, (json.loads(data) if status == 200 else None)

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class HttpxClient:
    """The same calls through httpx.AsyncClient (the costlier client, for comparison)."""

    def __init__(self, url: str, timeout: float, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits)

    async def post(self, path: str, body: bytes) -> int:
        return (await self.client.post(path, content=body,
                                       headers={"content-type": "application/json"})).status_code

    async def get_json(self, path: str) -> tuple[int, dict | None]:
        r = await self.client.get(path)
        return r.status_code, (r.json() if r.status_code == 200 else None)

    async def close(self) -> None:
        await self.client.aclose()


#: what a request that got no answer raises (a timeout, a refused or dropped connection)
NO_ANSWER = (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc; None elsewhere or without a pid)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(client, make_request, clients: int, duration: float, max_requests: int) -> dict:
    """Closed-loop load: ``clients`` tasks send ``make_request(i)`` = (path, body bytes) until time or count
    runs out. Returns counts, elapsed seconds and the sorted latencies (ms) of the answered requests."""
    counter = itertools.count()
    latencies: list[float] = []
    counts = {"2xx": 0, "5xx": 0, "other": 0}
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= max_requests:
                return
            path, body = make_request(i)
            t0 = time.perf_counter()
            try:
                status = await client.post(path, body)
                latencies.append((time.perf_counter() - t0) * 1000)
            except NO_ANSWER as e:  # no answer: a timeout, a refused or dropped connection
                status, kind = 0, type(e).__name__
            if 200 <= status < 300:
                counts["2xx"] += 1
                continue
            counts["5xx" if status >= 500 else "other"] += 1
            key = str(status) if status else kind
            errors[key] = errors.get(key, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return {**counts, "errors": errors, "seconds": time.perf_counter() - t0, "latencies": sorted(latencies)}


def scenarios(queries: list[str], k: int, batch_size: int, batch_mode: str,
              modes: tuple[str, ...] = ("sparse", "hybrid")) -> dict:
    """name -> (queries per request, make_request(i) -> (path, JSON body bytes)); bodies built once."""
    def search(mode):
        bodies = [json.dumps({"query": q, "k": k, "mode": mode}).encode() for q in queries]
        return lambda i: ("/search", bodies[i % len(bodies)])

    def batch(i):
        start = i * batch_size
        chunk = [queries[(start + j) % len(queries)] for j in range(batch_size)]
        return "/search/batch", json.dumps({"queries": chunk, "k": k, "mode": batch_mode}).encode()

    out = {f"search {m}": (1, search(m)) for m in modes}
    if batch_size > 0:
        out[f"batch {batch_mode} x{batch_size}"] = (batch_size, batch)
    return out


def start_server(index: str, port: int, threads: int | None, log_path: Path) -> subprocess.Popen:
    """``python -m lsr serve`` (-P: the repository's lsr/ folder must not shadow the installed package)."""
    cmd = [sys.executable, "-P", "-m", "lsr", "serve", "--index", index, "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    log = open(log_path, "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def wait_ready(client, proc: subprocess.Popen | None, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            status, body = await client.get_json("/ready")
            if status == 200:
                return body
        except NO_ANSWER:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fmt_errors(n: int, total: int) -> str:
    return "0" if n == 0 else f"{n} ({100 * n / max(total, 1):.1f}%)"


async def run(args, url: str, proc: subprocess.Popen | None) -> dict:
    queries = load_queries(args.queries)
    connections = max(args.concurrency + [args.soak_concurrency])
    client = (RawClient(url, args.timeout) if args.client == "raw" else
              HttpxClient(url, args.timeout, connections))
    report: dict = {"url": url, "client": args.client, "queries": len(queries), "cells": [], "memory_kib": {}}
    server_pid = proc.pid if proc is not None else args.server_pid
    try:
        ready = await wait_ready(client, proc, args.ready_timeout)
        report["index"] = {"documents": ready["documents"], "modes": ready["modes"]}
        print(f"server ready: {ready['documents']} documents, modes {', '.join(ready['modes'])}; "
              f"{len(queries)} queries; {args.client} client", file=sys.stderr)
        mem = report["memory_kib"]
        if proc is not None:
            mem["before_load"] = rss_kib(proc.pid)
        cells = scenarios(queries, args.k, args.batch_size, args.batch_mode, tuple(args.modes.split(",")))
        for name, (per_request, make) in cells.items():
            await drive(client, make, 1, math.inf, args.warmup)  # untimed: first-call costs, caches
            for clients in args.concurrency:
                cpu0 = (cpu_seconds(server_pid), time.process_time())
                r = await drive(client, make, clients, args.duration, args.max_requests)
                cpu1 = (cpu_seconds(server_pid), time.process_time())
                lat, n = r.pop("latencies"), r["2xx"] + r["5xx"] + r["other"]
                cpu = [None if a is None or b is None else (b - a) * 1000 / max(n, 1)
                       for a, b in zip(cpu0, cpu1)]
                cell = {"scenario": name, "clients": clients, "requests": n, **r,
                        "req_per_s": n / r["seconds"], "queries_per_s": r["2xx"] * per_request / r["seconds"],
                        **{f"p{p}_ms": percentile(lat, p) for p in (50, 95, 99)},
                        "server_cpu_ms_per_request": cpu[0], "client_cpu_ms_per_request": cpu[1]}
                report["cells"].append(cell)
                print(f"  {name:>18} x{clients:<3} {n:6d} requests {cell['req_per_s']:8.1f} req/s "
                      f"p50 {cell['p50_ms']:.1f} ms, 5xx {r['5xx']}, other errors {r['other']}",
                      file=sys.stderr)
        if proc is not None and args.soak_queries:
            mem["after_load"] = rss_kib(proc.pid)
            print(f"soak: {args.soak_queries} sparse searches, {args.soak_concurrency} clients",
                  file=sys.stderr)
            make = scenarios(queries, args.k, 1, "sparse")["search sparse"][1]
            soak = await drive(client, make, args.soak_concurrency, math.inf, args.soak_queries)
            soak.pop("latencies")
            report["soak"] = soak
            mem["after_soak"] = rss_kib(proc.pid)
    finally:
        await client.close()
    return report


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_report(report: dict) -> None:
    head = ["scenario", "clients", "requests", "req/s", "queries/s", "p50 ms", "p95 ms", "p99 ms", "5xx",
            "other errors", "server CPU ms/req", "client CPU ms/req"]
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for c in report["cells"]:
        print(f"| {c['scenario']} | {c['clients']} | {c['requests']} | {c['req_per_s']:.1f} | "
              f"{c['queries_per_s']:.1f} | {c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['p99_ms']:.1f} | "
              f"{fmt_errors(c['5xx'], c['requests'])} | {fmt_errors(c['other'], c['requests'])} | "
              f"{_ms(c['server_cpu_ms_per_request'])} | {_ms(c['client_cpu_ms_per_request'])} |")
    errors: dict[str, int] = {}
    for c in report["cells"]:
        for key, n in c["errors"].items():
            errors[key] = errors.get(key, 0) + n
    if errors:
        print(f"\nerrors by status: {errors}")
    mem, soak = report["memory_kib"], report.get("soak")
    if soak and all(mem.get(k) for k in ("before_load", "after_load", "after_soak")):
        before, after, soaked = (mem[k] / 1024 for k in ("before_load", "after_load", "after_soak"))
        n = soak["2xx"] + soak["5xx"] + soak["other"]
        print(f"\nServer RSS: {before:.1f} MiB before the load, {after:.1f} MiB after it, "
              f"{soaked:.1f} MiB after a soak of {n} sparse searches ({soak['seconds']:.0f} s, "
              f"5xx {soak['5xx']}, other errors {soak['other']}): {soaked - before:+.1f} MiB in all, "
              f"{soaked - after:+.1f} MiB over the soak.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--index", help="start `lsr serve --index DIR` on 127.0.0.1 and drive it")
    target.add_argument("--url", help="drive a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--server-pid", type=int, help="with --url: the server's process id, for its CPU time")
    p.add_argument("--port", type=int, default=0, help="port for the started server (default: a free one)")
    p.add_argument("--threads", type=int, help="the started server's search threads (default: its own)")
    p.add_argument("--queries", help="BEIR queries.jsonl (default: a few built-in queries)")
    p.add_argument("--concurrency", default="1,8,32", help="client counts, comma-separated (default 1,8,32)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per cell (default 15)")
    p.add_argument("--max-requests", type=int, default=20_000, help="requests per cell at most")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests before each scenario")
    p.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="queries per POST /search/batch (default 16; 0: no batch scenario)")
    p.add_argument("--modes", default="sparse,hybrid",
                   help="modes of the one-query scenarios, comma-separated (default sparse,hybrid)")
    p.add_argument("--batch-mode", default="sparse", help="mode of the batch scenario (default sparse)")
    p.add_argument("--soak-queries", type=int, default=10_000, help="sparse searches of the memory soak")
    p.add_argument("--soak-concurrency", type=int, default=8, help="clients of the soak (default 8)")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="HTTP client: raw (asyncio streams, cheap; default) or httpx (AsyncClient)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (then: an error)")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for GET /ready")
    p.add_argument("--json-out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    proc, log_path = None, None
    if args.index:
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = Path(tempfile.gettempdir()) / f"lsr-load-server-{port}.log"
        proc = start_server(args.index, port, args.threads, log_path)
        print(f"started the server (pid {proc.pid}) on {url}; its log: {log_path}", file=sys.stderr)
    else:
        url = args.url.rstrip("/")
    try:
        runner = uvloop.run if uvloop is not None else asyncio.run
        report = runner(run(args, url, proc))
    except RuntimeError as e:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
        print(f"error: {e}\n{tail}", file=sys.stderr)
        return 2
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print_report(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    server_errors = sum(c["5xx"] for c in report["cells"]) + report.get("soak", {}).get("5xx", 0)
    return 1 if server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
