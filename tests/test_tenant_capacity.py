"""No tenant can hold shared capacity: two namespaces on one Prometheus origin, one of them slow.

The origin is a loopback stand-in speaking Prometheus' /api/v1/query JSON that holds the attacker's
queries (up to 60 s, or until the scaler closes the connection) and records what it held. The scaler is
the real process over gRPC, with its shipped budget (2 queries in flight per namespace and origin).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from scaler._generated import externalscaler_pb2 as pb
from scaler.settings import SettingsError, load_settings
from tests.fixtures._slow import SlowPrometheus
from tests.fixtures._util import wait_for
from tests.fixtures.scaler import ScalerProcess, StartScaler, ref

ATTACKERS = 16  # as many slow triggers as the origin has pooled connections


@pytest.fixture
def origin() -> Iterator[SlowPrometheus]:
    server = SlowPrometheus(marker="slow", hold=60)
    yield server
    server.close()


def prometheus(origin: SlowPrometheus, query: str, timeout_ms: int = 60_000) -> dict[str, str]:
    return {
        "adapter": "prometheus",
        "serverAddress": origin.url,
        "query": query,
        "threshold": "1",
        "timeout": str(timeout_ms),
    }


def get_metrics(scaler: ScalerProcess, metadata: dict[str, str], namespace: str, name: str, deadline: float) -> object:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(metadata, name=name, namespace=namespace), metricName="m")
    return scaler.stub.GetMetrics.future(request, timeout=deadline)


def outcome(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call.result()  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        return exc.code(), str(exc.details())
    return grpc.StatusCode.OK, ""


def test_a_victim_answers_while_another_namespace_holds_slow_queries_on_the_same_origin(
    start_scaler: StartScaler, origin: SlowPrometheus
) -> None:
    scaler = start_scaler(max_source_timeout=4, source_timeout=4, error_cache_ttl=0)
    attack = [
        get_metrics(scaler, prometheus(origin, f'up{{job="slow-{i}"}}'), "attacker", f"heavy-{i}", 30)
        for i in range(ATTACKERS)
    ]
    wait_for(lambda: origin.holding == 2, 10, "the attacker's queries to reach the origin")
    time.sleep(0.5)  # room for more to arrive, if the budget let them through
    assert origin.holding == 2, "one namespace holds at most 2 of the origin's connections"

    for i in range(5):  # the victim, several ScaledObjects, with the attack in flight
        started = time.monotonic()
        value = scaler.value(prometheus(origin, f'up{{job="victim-{i}"}}', 2000), name=f"web-{i}", namespace="victim")
        assert value == 3
        assert time.monotonic() - started < 2, "the victim answers at its normal latency"
    assert origin.holding == 2, "the attack was still in flight while the victim was answered"

    results = [outcome(call) for call in attack]
    codes = {code for code, _ in results}
    assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}, results
    refused = [details for code, details in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused, "queries beyond the namespace's budget are refused once they waited their timeout"
    assert all("max_source_queries_per_namespace=2" in details and "'attacker'" in details for details in refused)
    timed_out = [details for code, details in results if code == grpc.StatusCode.DEADLINE_EXCEEDED]
    assert all("max_source_timeout" in details for details in timed_out), timed_out
    print("DEBUG", origin.stats(), sorted(c.name for c, _ in results))
    assert origin.most_held == 2
    # A call takes at most its timeout, the wait for a slot included: the slots the two timed-out queries
    # freed came with almost none of the waiters' 4 s left, so no third query ever reached the origin.
    assert origin.slow_started == 2
    assert len(timed_out) == 2
    assert scaler.metric("scaler_grpc_requests_total", code="UNKNOWN") == 0


def test_the_budget_is_per_namespace_so_the_attacker_is_not_limited_by_the_victim(
    start_scaler: StartScaler, origin: SlowPrometheus
) -> None:
    """Two namespaces each holding their full budget: 4 slow queries at the origin, 2 each."""
    scaler = start_scaler(max_source_timeout=30)
    calls = [
        get_metrics(scaler, prometheus(origin, f'up{{job="slow-{ns}-{i}"}}'), ns, f"so-{i}", 1.5)
        for ns in ("team-a", "team-b")
        for i in range(3)
    ]
    wait_for(lambda: origin.holding == 4, 10, "both namespaces' queries to reach the origin")
    assert [outcome(call)[0] for call in calls] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 6
    assert origin.most_held == 4


def test_a_query_every_caller_gave_up_on_is_cancelled_and_its_connection_closed(
    start_scaler: StartScaler, origin: SlowPrometheus
) -> None:
    # The cap is far away: only abandonment can close the connection within the bound below.
    scaler = start_scaler(max_source_timeout=30)
    metadata = prometheus(origin, 'up{job="slow"}')
    first = get_metrics(scaler, metadata, "team-a", "first", 0.5)
    second = get_metrics(scaler, metadata, "team-b", "second", 3)  # joins the same query (coalesced)
    assert outcome(first)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)
    assert origin.closed_by_client == 0 and origin.holding == 1, "a caller still waits: the query goes on"
    assert outcome(second)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: origin.closed_by_client == 1, 5, "the scaler to close the abandoned query's connection")
    assert origin.slow_started == 1
    assert scaler.metric("scaler_source_queries_total", outcome="abandoned") == 1
    # The budget came back with the cancelled query: the namespace can start two new ones.
    again = [get_metrics(scaler, prometheus(origin, f'up{{job="slow-{i}"}}'), "team-a", f"so-{i}", 1) for i in (1, 2)]
    wait_for(lambda: origin.holding == 2, 5, "two new queries from the same namespace")
    assert [outcome(call)[0] for call in again] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2


def test_a_push_poller_is_a_waiter_and_its_query_ends_with_the_last_stream(
    start_scaler: StartScaler, origin: SlowPrometheus
) -> None:
    scaler = start_scaler(max_source_timeout=30, push_interval=0.2)
    stream = scaler.stream_is_active(prometheus(origin, 'up{job="slow-stream"}'), namespace="team-a")
    wait_for(lambda: origin.holding == 1, 10, "the poller's query to reach the origin")
    stream.cancel()
    wait_for(lambda: origin.closed_by_client == 1, 5, "the stopped poller's query to be cancelled")
    assert origin.slow_started == 1


def test_a_trigger_timeout_above_the_cap_gets_the_cap_and_one_log_line(
    start_scaler: StartScaler, origin: SlowPrometheus
) -> None:
    scaler = start_scaler(max_source_timeout=1, source_timeout=1, error_cache_ttl=0)
    metadata = prometheus(origin, 'up{job="slow"}', timeout_ms=3_600_000)
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            scaler.metrics(metadata, namespace="team-a", timeout=20)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "within 1s (max_source_timeout)" in str(err.value.details())
        assert time.monotonic() - started < 5, "the query is cut at the cap, not at the trigger's hour"
    wait_for(lambda: origin.closed_by_client == 3, 5, "each capped query's connection to be closed")
    assert scaler.logs().count("using max_source_timeout (1s)") == 1
    # Within the cap, the trigger's own timeout is kept: a fast query still answers.
    assert scaler.value(prometheus(origin, "up", 500), namespace="team-a") == 3


def test_source_timeout_may_not_exceed_the_cap() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"source_timeout": 20, "max_source_timeout": 10})
    assert "source_timeout (20) may not exceed max_source_timeout (10)" in str(err.value)


def test_a_namespace_may_watch_at_most_max_pollers_sources(start_scaler: StartScaler, origin: SlowPrometheus) -> None:
    scaler = start_scaler(max_pollers_per_namespace=2, push_interval=0.2)
    a1 = scaler.stream_is_active(prometheus(origin, "queue_a1"), namespace="team-a", name="a1")
    a2 = scaler.stream_is_active(prometheus(origin, "queue_a2"), namespace="team-a", name="a2")
    assert a1.next().result is True and a2.next().result is True

    refused = scaler.stream_is_active(prometheus(origin, "queue_a3"), namespace="team-a", name="a3")
    assert refused.ended.wait(10)
    assert refused.error is not None and refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_pollers_per_namespace=2" in str(refused.error.details())
    assert "'team-a'" in str(refused.error.details())

    # Another stream on a source the namespace already watches shares its poller: allowed.
    again = scaler.stream_is_active(prometheus(origin, "queue_a1"), namespace="team-a", name="a1-copy")
    assert again.next().result is True
    # Another namespace has a cap of its own, and may share team-a's pollers too.
    b1 = scaler.stream_is_active(prometheus(origin, "queue_a3"), namespace="team-b", name="b1")
    b2 = scaler.stream_is_active(prometheus(origin, "queue_a1"), namespace="team-b", name="b2")
    assert b1.next().result is True and b2.next().result is True
    # The refusal touched nothing that ran: team-a's streams are open and its pollers keep polling.
    answered = origin.fast_answered
    wait_for(lambda: origin.fast_answered >= answered + 6, 10, "the pollers to keep polling")
    assert not (a1.ended.is_set() or a2.ended.is_set() or again.ended.is_set())
    assert scaler.metric("scaler_source_pollers") == 3

    # Once team-a stops watching one source, it may watch another.
    a2.cancel()
    wait_for(lambda: scaler.metric("scaler_source_pollers") == 2, 10, "a2's poller to stop")
    a4 = scaler.stream_is_active(prometheus(origin, "queue_a4"), namespace="team-a", name="a4")
    assert a4.next().result is True
    for stream in (a1, again, b1, b2, a4):
        stream.cancel()
