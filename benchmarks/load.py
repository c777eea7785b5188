"""A bounded open-loop HTTP/1.1 load: a fixed number of requests at a fixed rate over keep-alive connections.

Request i is due at start + i / rate whether or not earlier ones have answered (open loop), so
a slow path shows up as latency instead of as a lower request rate. Latency runs from the due
time to the last byte of the answer: time spent waiting for a free connection counts. The run
ends by itself: after the last request is due, stragglers get `timeout` seconds and then count
as errors.

    python -m benchmarks.load http://near:8080/ --count 2000 --rate 200 --connections 8

prints one JSON object: the latency percentiles (milliseconds), errors and achieved rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

PERCENTILES = (50.0, 90.0, 99.0)
MAX_HEADER_BYTES = 64 * 1024


class HttpError(Exception):
    """An answer that is not a complete HTTP/1.1 200 response."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    authority: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: give a plain http://HOST[:PORT]/PATH URL")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
        return cls(parts.hostname, port, path, authority)

    def request(self) -> bytes:
        return f"GET {self.path} HTTP/1.1\r\nHost: {self.authority}\r\nUser-Agent: dpumesh-bench\r\n\r\n".encode()


@dataclass
class LoadSummary:
    """What one run measured; latencies in milliseconds."""

    requested: int
    completed: int
    errors: int
    rate: float
    achieved_rate: float
    duration_s: float
    latency_ms: dict[str, float]
    max_schedule_lag_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list)  # every latency, ascending; only when asked for


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list: the smallest value with at least p% of values at or below."""
    if not ordered:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[rank - 1]


def summarize(
    latencies_s: list[float],
    errors: dict[str, int],
    requested: int,
    rate: float,
    duration_s: float,
    max_lag_s: float,
    keep_samples: bool = False,
) -> LoadSummary:
    ordered = sorted(latencies_s)
    latency: dict[str, float] = {}
    if ordered:
        latency = {f"p{p:g}": round(percentile(ordered, p) * 1000, 3) for p in PERCENTILES}
        latency["mean"] = round(sum(ordered) / len(ordered) * 1000, 3)
        latency["max"] = round(ordered[-1] * 1000, 3)
    return LoadSummary(
        requested=requested,
        completed=len(ordered),
        errors=sum(errors.values()),
        rate=rate,
        achieved_rate=round(len(ordered) / duration_s, 1) if duration_s > 0 else 0.0,
        duration_s=round(duration_s, 3),
        latency_ms=latency,
        max_schedule_lag_ms=round(max_lag_s * 1000, 3),
        error_kinds=dict(sorted(errors.items())),
        samples_ms=[round(x * 1000, 3) for x in ordered] if keep_samples else [],
    )


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, target: Target):
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self) -> bytes:
        """Send one request and read its whole answer; the body of a 200, HttpError otherwise."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(self.target.request())
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self.close()
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            self.close()
            raise HttpError("answer without content-length")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        status = status_line.split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise HttpError(f"status {status_line!r}")
        return body


async def _one_request(
    pool: asyncio.Queue[Connection], due: float, timeout: float, latencies: list[float], errors: dict[str, int]
) -> None:
    """One request due at loop time `due`; it fails with "timeout" unless answered by `due + timeout`."""
    connection: Connection | None = None
    try:
        async with asyncio.timeout_at(due + timeout):
            connection = await pool.get()
            await connection.get()
        latencies.append(asyncio.get_running_loop().time() - due)
    except TimeoutError:
        if connection is not None:
            connection.close()  # the answer may still arrive: never reuse a connection in an unknown state
        errors["timeout"] = errors.get("timeout", 0) + 1
    except (HttpError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        if connection is not None:
            connection.close()
        kind = type(exc).__name__
        errors[kind] = errors.get(kind, 0) + 1
    finally:
        if connection is not None:
            pool.put_nowait(connection)


async def run_load(
    url: str,
    count: int,
    rate: float,
    connections: int = 8,
    timeout: float = 5.0,
    warmup: int = 0,
    keep_samples: bool = False,
) -> LoadSummary:
    """`warmup` requests (not measured) then `count` measured ones, all at `rate` per second."""
    if count < 1 or rate <= 0 or connections < 1 or timeout <= 0 or warmup < 0:
        raise ValueError("count and connections must be at least 1, rate and timeout positive, warmup >= 0")
    target = Target.parse(url)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    opened = [Connection(target) for _ in range(connections)]
    await asyncio.wait_for(asyncio.gather(*(c.open() for c in opened)), timeout)
    for connection in opened:
        pool.put_nowait(connection)
    try:
        if warmup:
            await _phase(pool, warmup, rate, timeout, [], {})
        latencies: list[float] = []
        errors: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        max_lag = await _phase(pool, count, rate, timeout, latencies, errors)
        duration = loop.time() - started
    finally:
        for connection in opened:
            connection.close()
    return summarize(latencies, errors, count, rate, duration, max_lag, keep_samples)


async def _phase(
    pool: asyncio.Queue[Connection],
    count: int,
    rate: float,
    timeout: float,
    latencies: list[float],
    errors: dict[str, int],
) -> float:
    """Issue `count` requests on schedule and wait for all of them; the largest lag behind schedule (s).

    Every request ends by its due time + `timeout`, so the phase ends by (count - 1) / rate + timeout.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    max_lag = 0.0
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, loop.time() - due)
        tasks.append(asyncio.create_task(_one_request(pool, due, timeout, latencies, errors)))
    await asyncio.gather(*tasks)
    return max_lag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://HOST[:PORT]/PATH")
    parser.add_argument("--count", type=int, default=2000, help="measured requests (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    parser.add_argument("--warmup", type=int, default=0, help="requests sent first and not measured (default 0)")
    parser.add_argument("--samples", action="store_true", help="also print every latency (samples_ms)")
    args = parser.parse_args(argv)
    try:
        summary = asyncio.run(
            run_load(args.url, args.count, args.rate, args.connections, args.timeout, args.warmup, args.samples)
        )
    except (ValueError, OSError, TimeoutError) as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
