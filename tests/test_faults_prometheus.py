"""Prometheus killed and restarted while a push stream is open and KEDA-style polling goes on.

Calls fail fast with UNAVAILABLE, the stream stays open and reports again once Prometheus is back, and
hundreds of failed polls leave no file descriptors, threads, asyncio tasks or connections behind.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import grpc
import psutil
import pytest

from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures._faults import FAILED_POLLS, Footprint, KedaPolling, failed_queries, fast_failing_settings
from tests.fixtures._util import LoopbackHttpServer, QuietHandler, wait_for
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ScalerProcess, StartScaler, ref

SOURCE_TIMEOUT_MS = 1000


@pytest.fixture
def polling_scaler(start_scaler: StartScaler) -> ScalerProcess:
    return start_scaler(**fast_failing_settings(SOURCE_TIMEOUT_MS / 1000))


def test_prometheus_killed_and_restarted_under_a_stream_and_polling(
    polling_scaler: ScalerProcess, own_prometheus: PrometheusServer, exporter: Exporter
) -> None:
    scaler, prometheus = polling_scaler, own_prometheus
    port = int(prometheus.url.rsplit(":", 1)[1])
    series = unique_metric("fault")
    exporter.set(series, 0)
    prometheus.wait_for_value(series, 0)
    metadata = {
        "adapter": "prometheus",
        "serverAddress": prometheus.url,
        "query": series,
        "threshold": "1",
        "timeout": str(SOURCE_TIMEOUT_MS),
    }
    stream = scaler.stream_is_active(metadata)
    assert stream.next().result is False
    healthy = KedaPolling(scaler, metadata)
    wait_for(lambda: healthy.codes.count(grpc.StatusCode.OK) >= 20, 10, "healthy polls")
    healthy.finish()
    assert set(healthy.codes) == {grpc.StatusCode.OK}
    # Both measurements are taken with the stream open and no unary call in flight.
    baseline = Footprint.settled(scaler, port)

    prometheus.kill()
    # The poller's last good reading may still be cached for a few ms: start polling once a query failed.
    wait_for(lambda: failed_queries(scaler, "prometheus") >= 1, 20, "the first failed query", interval=0.05)
    polling = KedaPolling(scaler, metadata)
    wait_for(
        lambda: failed_queries(scaler, "prometheus") >= FAILED_POLLS, 60, f"{FAILED_POLLS} failed polls", interval=0.2
    )
    polling.finish()
    during = Footprint.settled(scaler, port)
    assert set(polling.codes) == {grpc.StatusCode.UNAVAILABLE}, "after the kill every call is UNAVAILABLE"
    assert len(polling.codes) >= 20
    assert polling.slowest < SOURCE_TIMEOUT_MS / 1000, "calls fail within the configured source timeout"
    assert not stream.ended.is_set() and stream.received == [stream.received[0]]
    assert during.not_above(baseline) == [], f"leak after {FAILED_POLLS} failed polls: {during} vs {baseline}"
    assert during.connections_to_source == 0

    exporter.set(series, 5)
    prometheus.restart()
    # The same stream, never reopened, reports the source's new state once it is back.
    assert stream.next(timeout=20).result is True
    assert not stream.ended.is_set()
    assert scaler.value(metadata) == 5
    after = Footprint.settled(scaler, port)
    assert after.not_above(baseline) == [], f"leak after recovery: {after} vs {baseline}"
    assert "stream kept open" in scaler.logs()
    stream.cancel()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts TCP connections (the kernel's backlog) and never answers: a source slower than any timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


def test_a_query_nobody_waits_for_any_more_fails_quietly(start_scaler: StartScaler, silent_port: int) -> None:
    scaler = start_scaler(error_cache_ttl=0)
    metadata = {
        "adapter": "prometheus",
        "serverAddress": f"http://127.0.0.1:{silent_port}",
        "query": "up",
        "threshold": "1",
        "timeout": "300",
    }
    # KEDA gives up first (client deadline 0.1 s); the shared query, with no one left waiting for it, is
    # abandoned (cancelled), or times out if the cancellation reaches the server after the 0.3 s.
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as err:
            scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(metadata), metricName="m"), timeout=0.1)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.35)  # past the source timeout: the next call starts a new query
    ended = ("abandoned", "deadline_exceeded")
    wait_for(lambda: sum(scaler.metric("scaler_source_queries_total", outcome=o) for o in ended) >= 5, 10, "ends")
    scaler.stop()
    assert "never retrieved" not in scaler.logs()


@pytest.fixture
def nested_json_server() -> Iterator[str]:
    """An HTTP server answering every request with JSON nested deeper than Python's parser can follow."""
    body = b"[" * 100_000

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200, body)

    server = LoopbackHttpServer(Handler)
    yield server.url
    server.close()


def test_a_source_answering_too_deeply_nested_json_is_unavailable_not_internal(
    scaler: ScalerProcess, nested_json_server: str
) -> None:
    for address in (nested_json_server, f"{nested_json_server}/status/500"):
        metadata = {"adapter": "prometheus", "serverAddress": address, "query": "up", "threshold": "1"}
        with pytest.raises(grpc.RpcError) as err:
            scaler.metrics(metadata)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()


@pytest.fixture
def huge_body_server() -> Iterator[str]:
    """An HTTP server answering /declared with a 64 MiB Content-Length and /streamed with an endless body."""
    chunk = b" " * 65536

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.0"  # no length: the body runs until the connection closes

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path.startswith("/declared"):
                self.send_header("Content-Length", str(64 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(64 * 1024 * 1024 // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:  # the scaler hung up once it had read past its limit
                pass

    server = LoopbackHttpServer(Handler)
    yield server.url
    server.close()


def test_a_source_answering_a_huge_body_is_unavailable_and_not_buffered(
    scaler: ScalerProcess, huge_body_server: str
) -> None:
    process = psutil.Process(scaler.proc.pid)
    before = process.memory_info().rss
    for path in ("/declared", "/streamed"):
        metadata = {"adapter": "prometheus", "serverAddress": huge_body_server + path, "query": "up", "threshold": "1"}
        with pytest.raises(grpc.RpcError) as err:
            scaler.metrics(metadata)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "1 MiB limit" in err.value.details()
    # The 64 MiB bodies were refused at the limit, not buffered whole; the scaler serves on.
    assert process.memory_info().rss - before < 40 * 1024 * 1024
    assert scaler.spec(metadata).metricSpecs[0].targetSizeFloat == 1
