"""Replicas behind one name, reached by a round_robin client as KEDA reaches a headless Service.

Each replica is its own scaler process on its own loopback address; the client resolves the name through a
scripted DNS server with grpc's own `dns:` resolver, so a replica added later is found only the way grpc-go
finds it: by re-resolving when a connection ends (the server's max connection age).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler.testing._process import wait_for
from tests.fixtures._replicas import SERVICE_NAME, Replica, common_port, replica_hosts, round_robin_channel
from tests.fixtures.dns import ScriptedDns
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ref

AGE = 2.0  # seconds: short, so that a test sees several ages


@dataclass
class Traffic:
    """KEDA-like calls on one channel from background threads: unary polls, and streams reopened after a
    clean end (KEDA waits 2 s; here 0.1 s). Counts outcomes; never retries a failed unary call."""

    stub: Any
    metadata: dict[str, str]
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    clean_ends: dict[str, int] = field(default_factory=lambda: {"StreamIsActive": 0, "StreamMetricSpec": 0})
    stream_errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._poll, self._stream("StreamIsActive"), self._stream("StreamMetricSpec")):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _poll(self) -> None:
        request = pb.GetMetricsRequest(scaledObjectRef=ref(self.metadata), metricName="")
        while not self.stop.is_set():
            try:
                self.stub.GetMetrics(request, timeout=10)
                self.stub.IsActive(ref(self.metadata), timeout=10)
                self.calls += 2
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            time.sleep(0.01)

    def _stream(self, method: str) -> Callable[[], None]:
        def run() -> None:
            while not self.stop.is_set():
                call = getattr(self.stub, method)(ref(self.metadata))
                try:
                    for _ in call:
                        if self.stop.is_set():
                            call.cancel()
                    if not self.stop.is_set():
                        self.clean_ends[method] += 1
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.CANCELLED or not self.stop.is_set():
                        self.stream_errors.append(f"{method} {exc.code().name}: {exc.details()}")
                self.stop.wait(0.1)

        return run

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(15)


@contextlib.contextmanager
def replicas_behind_one_name(dns: ScriptedDns, count: int, *args: str) -> Iterator[tuple[list[Replica], Any]]:
    """`count` replicas started now, and a round_robin stub resolving to them; more may be added later."""
    hosts = replica_hosts(3)
    port = common_port(hosts)
    started: list[Replica] = []
    try:
        started += [Replica(host, port, args) for host in hosts[:count]]
        dns.answer(SERVICE_NAME, [r.address.rsplit(":", 1)[0] for r in started])
        channel, stub = round_robin_channel(dns, port)
        with channel:
            yield started, stub
    finally:
        for replica in started:
            replica.stop()


def test_a_replica_added_later_gets_calls_and_streams_reopen_cleanly(
    scripted_dns: ScriptedDns, scraped: PrometheusServer
) -> None:
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": "vector(3)", "threshold": "2"}
    args = ("--max-connection-age", str(AGE), "--push-interval", "0.3")
    with replicas_behind_one_name(scripted_dns, 1, *args) as (replicas, stub):
        traffic = Traffic(stub, metadata)
        traffic.start()
        try:
            first = replicas[0]
            wait_for(lambda: first.served() >= 5, 20, "the first replica to serve polls")
            host, port = replica_hosts(2)[1], first.grpc_port
            replicas.append(Replica(host, port, args))
            added_at = time.monotonic()
            scripted_dns.answer(SERVICE_NAME, replica_hosts(2))
            second = replicas[1]
            # One age for the client's connection to get its GOAWAY and re-resolve (x3: generous).
            wait_for(lambda: second.served() > 0, 3 * AGE + 5, "the added replica to get a call")
            reached = time.monotonic() - added_at
            before = (first.served(), second.served())
            time.sleep(3 * AGE)
            after = (first.served(), second.served())
            wait_for(lambda: min(traffic.clean_ends.values()) >= 3, 10 * AGE, "three clean ends of each stream")
        finally:
            traffic.close()
        share = (after[1] - before[1]) / (after[0] - before[0] + after[1] - before[1])
        streams_ok = sum(r.served("StreamIsActive") + r.served("StreamMetricSpec") for r in replicas)
        streams_on_second = replicas[1].served("StreamIsActive") + replicas[1].metric("scaler_push_streams_open")
        stream_failures = sum(
            r.metric("scaler_grpc_requests_total", method=m) - r.served(m)
            for r in replicas
            for m in ("StreamIsActive", "StreamMetricSpec")
        )
    assert traffic.failures == [], traffic.failures[:3]  # no unary call failed across the rotations
    assert traffic.stream_errors == [], traffic.stream_errors[:3]  # every stream end was a clean OK
    assert traffic.calls > 0
    assert reached < 3 * AGE + 5
    # round_robin over two ready replicas: about half each once both are known.
    assert 0.3 <= share <= 0.7, (before, after)
    # The servers ended the streams themselves with OK, as the client saw (streams still open are not counted).
    assert streams_ok >= sum(traffic.clean_ends.values())
    assert stream_failures == 0
    # Reopened streams went where the balancer sent them: the added replica holds streams too.
    assert streams_on_second > 0


def test_replicas_give_the_same_spec_and_readings_no_older_than_the_ttl(
    scripted_dns: ScriptedDns, scraped: PrometheusServer, exporter: Exporter
) -> None:
    ttl = 1.0
    name = unique_metric("replicas")
    exporter.set(name, 4)
    scraped.wait_for_value(name, 4)
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": name, "threshold": "3"}
    variants = [metadata, {**metadata, "threshold": "2.5"}, {**metadata, "metricName": "orders"}]
    with replicas_behind_one_name(scripted_dns, 2, "--cache-ttl", str(ttl)) as (replicas, stub):
        # The spec comes from the metadata alone: byte for byte the same from either replica.
        for variant in variants:
            specs = {r.spec(variant).SerializeToString() for r in replicas}
            assert len(specs) == 1, variant
        request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata), metricName="")
        for _ in range(10):
            assert stub.GetMetrics(request, timeout=10).metricValues[0].metricValueFloat == 4
        served_before = [r.served() for r in replicas]
        exporter.set(name, 9)
        scraped.wait_for_value(name, 9)
        seen_at = time.monotonic()  # from now on Prometheus answers 9
        answers: list[tuple[float, float]] = []
        while time.monotonic() - seen_at < 3 * ttl:
            answers.append(
                (time.monotonic() - seen_at, stub.GetMetrics(request, timeout=10).metricValues[0].metricValueFloat)
            )
            time.sleep(0.02)
        served = [r.served() - b for r, b in zip(replicas, served_before, strict=True)]
    # Until one TTL has passed a replica may still serve the reading it took before; never anything else.
    assert {value for _, value in answers} <= {4, 9}
    # Each replica reads the source itself, and a reading lives one TTL: after that, every replica says 9.
    late = [value for at, value in answers if at > ttl + 0.05]
    assert late and set(late) == {9}
    assert min(served) > 0.3 * sum(served), served  # the polls went through both replicas
