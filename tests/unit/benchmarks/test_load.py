"""benchmarks.load: its statistics, and its open-loop schedule against real loopback HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from benchmarks.load import Target, main, percentile, run_load, summarize


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (1, 50, 90, 99, 99.5, 100)] == [1, 50, 90, 99, 100, 100]
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_refuses_a_rank_outside_0_to_100(p):
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], p)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summary_in_milliseconds_with_errors_and_achieved_rate():
    latencies = [0.001 * v for v in range(10, 0, -1)]  # 1..10 ms, unsorted
    summary = summarize(latencies, {"timeout": 2, "HttpError": 1}, 13, 100.0, 0.5, 0.0042)
    assert summary.completed == 10 and summary.errors == 3 and summary.requested == 13
    assert summary.latency_ms == {"p50": 5.0, "p90": 9.0, "p99": 10.0, "mean": 5.5, "max": 10.0}
    assert summary.achieved_rate == 20.0
    assert summary.max_schedule_lag_ms == 4.2
    assert summary.error_kinds == {"HttpError": 1, "timeout": 2}


def test_summary_without_answers_has_no_percentiles():
    summary = summarize([], {"timeout": 5}, 5, 10.0, 0.9, 0.0)
    assert summary.completed == 0 and summary.errors == 5 and summary.latency_ms == {}


def test_target_parsing():
    assert Target.parse("http://near:8080/items?x=1") == Target("near", 8080, "/items?x=1", "near:8080")
    assert Target.parse("http://10.244.1.5") == Target("10.244.1.5", 80, "/", "10.244.1.5")
    with pytest.raises(ValueError, match="plain http"):
        Target.parse("https://near/")


class EchoServer:
    """A keep-alive HTTP/1.1 server on loopback that counts connections and requests."""

    def __init__(self, delay: float = 0.0, status: int = 200, close_every: int = 0, silent: bool = False):
        self.delay, self.status, self.close_every, self.silent = delay, status, close_every, silent
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                served += 1
                if self.silent:
                    continue
                await asyncio.sleep(self.delay)
                closing = bool(self.close_every) and served % self.close_every == 0
                body = b'{"ok": true}'
                head = f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(body)}\r\n"
                head += "connection: close\r\n" if closing else ""
                writer.write(head.encode() + b"\r\n" + body)
                await writer.drain()
                if closing:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"http://127.0.0.1:{port}/"


def _load(server: EchoServer, **kwargs):
    async def go():
        async with server.running() as url:
            return await run_load(url, **kwargs)

    return asyncio.run(go())


def test_every_request_is_answered_over_the_kept_alive_connections():
    server = EchoServer()
    summary = _load(server, count=60, rate=600, connections=3, warmup=10)
    assert summary.completed == 60 and summary.errors == 0
    assert server.requests == 70, "warm-up requests are sent but not measured"
    assert server.connections == 3
    assert set(summary.latency_ms) == {"p50", "p90", "p99", "mean", "max"}
    assert summary.latency_ms["p50"] <= summary.latency_ms["p90"] <= summary.latency_ms["p99"]


def test_the_schedule_does_not_wait_for_answers_so_queueing_counts_as_latency():
    # One connection, 30 ms per answer, a request due every 5 ms: a closed loop would slow
    # down to 33 rps; the open loop keeps issuing, and the waiting shows in the latency.
    server = EchoServer(delay=0.03)
    summary = _load(server, count=20, rate=200, connections=1)
    assert summary.completed == 20 and summary.errors == 0
    # The last request is due at 95 ms but cannot finish before 20 x 30 ms = 600 ms.
    assert summary.latency_ms["max"] >= 600 - 95
    assert summary.max_schedule_lag_ms < summary.latency_ms["max"]


def test_a_closed_connection_is_reopened():
    server = EchoServer(close_every=5)
    summary = _load(server, count=40, rate=400, connections=2)
    assert summary.completed == 40 and summary.errors == 0
    assert server.connections >= 40 // 5


def test_answers_other_than_200_are_errors():
    summary = _load(EchoServer(status=503), count=10, rate=200, connections=2)
    assert summary.completed == 0 and summary.error_kinds == {"HttpError": 10}


def test_unanswered_requests_time_out_and_the_run_still_ends():
    started = time.monotonic()
    summary = _load(EchoServer(silent=True), count=10, rate=100, connections=2, timeout=0.3)
    elapsed = time.monotonic() - started
    assert summary.completed == 0 and summary.error_kinds == {"timeout": 10}
    assert elapsed < 9 / 100 + 0.3 + 2.0, "the run is bounded by the last due time plus the timeout"


@pytest.mark.parametrize(
    "kwargs", [{"count": 0, "rate": 1.0}, {"count": 1, "rate": 0.0}, {"count": 1, "rate": 1.0, "connections": 0}]
)
def test_nonsense_parameters_are_refused(kwargs):
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(run_load("http://127.0.0.1:9/", **kwargs))


def test_the_command_prints_one_json_summary(capsys):
    server = EchoServer()

    async def serve_and_run():
        async with server.running() as url:
            return await asyncio.to_thread(main, [url, "--count", "5", "--rate", "100", "--connections", "1"])

    assert asyncio.run(serve_and_run()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["completed"] == 5 and printed["errors"] == 0 and printed["requested"] == 5


def test_the_command_reports_an_unreachable_server_without_a_traceback(capsys):
    assert main(["http://127.0.0.1:9/", "--count", "1"]) == 2
    assert capsys.readouterr().err.startswith("load: ")
