"""SIGTERM on a real subprocess: not ready at once, streams end OK, in-flight calls finish, exit 0."""

from __future__ import annotations

import signal
import time

import grpc
import httpx
import pytest

from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import StartScaler, ref


def test_sigterm_drains_gracefully_and_exits_zero(
    start_scaler: StartScaler, prometheus: PrometheusServer, silent_port: int
) -> None:
    scaler = start_scaler(shutdown_grace=8)
    good = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(3)", "threshold": "1"}
    slow = {
        "adapter": "prometheus",
        "serverAddress": f"http://127.0.0.1:{silent_port}",
        "query": "up",
        "threshold": "1",
        "timeout": "2500",
    }
    active = scaler.stream_is_active(good)
    spec = scaler.stream_metric_spec(good)
    assert active.next().result is True
    assert spec.next().metricSpecs[0].targetSizeFloat == 1
    in_flight = scaler.stub.GetMetrics.future(
        pb.GetMetricsRequest(scaledObjectRef=ref(slow), metricName="m"), timeout=30
    )
    time.sleep(0.5)  # the slow call is now waiting on its source

    sent = time.monotonic()
    scaler.proc.send_signal(signal.SIGTERM)

    # Not ready at once, while the in-flight call is still running.
    time.sleep(0.3)
    assert httpx.get(f"{scaler.http_url}/readyz", timeout=2).status_code == 503
    assert httpx.get(f"{scaler.http_url}/healthz", timeout=2).status_code == 200
    # Push streams end with status OK, so KEDA reconnects (to another pod) without backoff.
    assert active.ended.wait(5) and active.error is None
    assert spec.ended.wait(5) and spec.error is None
    # New calls are refused.
    with pytest.raises(grpc.RpcError) as refused:
        scaler.metrics(good, name="late")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # The in-flight unary call finishes with its own answer (its source timed out), not a cancellation.
    with pytest.raises(grpc.RpcError) as finished:
        in_flight.result()
    assert finished.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert scaler.proc.wait(15) == 0
    assert time.monotonic() - sent < 8 + 5
    assert '"msg": "stopped"' in scaler.logs()


def test_sigint_also_exits_zero(start_scaler: StartScaler) -> None:
    scaler = start_scaler()
    assert scaler.stop(signal.SIGINT) == 0
