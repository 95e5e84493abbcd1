"""The RabbitMQ adapter over the management API: counts, regex over every page, and KEDA's rate modes.

Rates come from real traffic (threads publishing and consuming), and each rate reading is compared with
the broker's own numbers from a snapshot that did not change while the scaler read it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from tests.fixtures._util import wait_for
from tests.fixtures.rabbitmq import RabbitBroker, Traffic
from tests.fixtures.scaler import ScalerProcess, StartScaler


def meta(host: str, queue: str, **extra: str) -> dict[str, str]:
    return {
        "scalerAddress": "scaler.keda:9090",
        "adapter": "rabbitmq",
        "host": host,
        "queueName": queue,
        "mode": "QueueLength",
        "value": "5",
        **extra,
    }


def snapshot(info: dict[str, Any]) -> tuple[float, float, float, float]:
    stats = info.get("message_stats", {})
    return (
        float(info.get("messages") or 0),
        float(info.get("messages_ready") or 0),
        float(stats.get("publish_details", {}).get("rate", 0.0)),
        float(stats.get("deliver_get_details", {}).get("rate", 0.0)),
    )


Stats = tuple[float, float, float, float]  # messages, ready, publish rate, deliver_get rate


def against_broker(
    rabbitmq: RabbitBroker,
    queue: str,
    read: Callable[[], float],
    expected: Callable[[Stats], float],
    when: Callable[[Stats], bool] = lambda stats: True,
) -> float:
    """`read()` (a reading or an activity) checked against KEDA's rule on the broker's stats of that moment.

    The broker's stats are a step function (they move every few seconds): the scaler's reading, taken
    between two snapshots, must equal KEDA's rule on one of them. When the snapshots are equal it must
    equal that value exactly; when they differ it must match either, else the stats moved more than once
    and we look again. `when` says which stats make a meaningful comparison.
    """

    def settled() -> tuple[float] | None:
        before = snapshot(rabbitmq.queue_info(queue))
        time.sleep(0.25)  # past the module scaler's cache TTL: the next reading is fresh
        got = read()
        after = snapshot(rabbitmq.queue_info(queue))
        candidates = [max(0.0, expected(s)) for s in {before, after} if when(s)]
        if before == after and candidates:
            assert got == pytest.approx(candidates[0], abs=1e-6), (got, before)
        return (got,) if any(got == pytest.approx(c, abs=1e-6) for c in candidates) else None

    return wait_for(settled, 90, f"a reading of {queue} taken on stable broker stats")[0]


@pytest.fixture(scope="module")
def busy(rabbitmq: RabbitBroker) -> Iterator[dict[str, str]]:
    """Three queues under steady traffic: published-only, flowing (fast consumer), draining (slow consumer)."""
    traffic = Traffic(rabbitmq)
    queues = {name: rabbitmq.declare(name) for name in ("published", "flowing", "draining")}
    rabbitmq.publish(queues["draining"], 200)
    traffic.publish(queues["published"], 20)
    traffic.publish(queues["flowing"], 20)
    traffic.consume(queues["flowing"])
    traffic.publish(queues["draining"], 10)
    traffic.consume(queues["draining"], per_second=5)

    def rates_visible() -> bool:
        published = snapshot(rabbitmq.queue_info(queues["published"]))
        flowing = snapshot(rabbitmq.queue_info(queues["flowing"]))
        draining = snapshot(rabbitmq.queue_info(queues["draining"]))
        return published[2] > 0 and flowing[3] > 0 and draining[3] > 0 and draining[2] > 0

    try:
        wait_for(rates_visible, 40, "the broker to report publish and deliver rates")
        yield queues
    finally:
        traffic.close()


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["classic", "quorum", "stream"])
def test_queue_length_counts_every_queue_type(scaler: ScalerProcess, rabbitmq: RabbitBroker, kind: str) -> None:
    queue = rabbitmq.declare(kind=kind)
    rabbitmq.publish(queue, 3)
    rabbitmq.wait_for_messages(queue, 3)
    assert scaler.value(meta(rabbitmq.http_host(), queue)) == 3


def test_unacknowledged_messages_count_unless_excluded(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 5)
    holder = rabbitmq.channel()
    for _ in range(2):
        method, _, _ = holder.basic_get(queue, auto_ack=False)  # delivered, held unacknowledged
        assert method is not None
    rabbitmq.wait_for_queue(queue, lambda q: q.get("messages_unacknowledged") == 2, "2 unacknowledged")
    assert scaler.value(meta(rabbitmq.http_host(), queue)) == 5
    assert scaler.value(meta(rabbitmq.http_host(), queue, excludeUnacknowledged="true")) == 3
    holder.connection.close()


def test_vhost_in_host_and_vhost_name_read_the_same_queue(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 4)
    rabbitmq.wait_for_messages(queue, 4)
    assert scaler.value(meta(rabbitmq.http_host(), queue)) == 4
    assert scaler.value(meta(rabbitmq.http_host("/"), queue, vhostName=rabbitmq.vhost)) == 4
    assert scaler.value(meta(rabbitmq.http_host("/"), queue, protocol="http", vhostName=rabbitmq.vhost)) == 4


def test_missing_queue_is_not_found_naming_queue_and_vhost(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(meta(rabbitmq.http_host(), "no-such-queue"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-queue" in err.value.details() and rabbitmq.vhost in err.value.details()


def test_wrong_password_is_unauthenticated_and_never_shown(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(meta(rabbitmq.http_host(password="Wr0ng-http-pa55"), "any"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Wr0ng-http-pa55" not in err.value.details()
    assert "Wr0ng-http-pa55" not in scaler.logs()


# --- regex -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_matching(rabbitmq: RabbitBroker) -> str:
    """Five queues holding 1..5 messages whose names match one regex, and one queue that does not match."""
    prefix = uuid.uuid4().hex[:8]
    names = [rabbitmq.declare(f"rx{prefix}-{i}") for i in range(1, 6)]
    for count, name in enumerate(names, start=1):
        rabbitmq.publish(name, count)
    outsider = rabbitmq.declare(f"other{prefix}")
    rabbitmq.publish(outsider, 100)
    for count, name in enumerate(names, start=1):
        rabbitmq.wait_for_messages(name, count)
    return f"^rx{prefix}-.*"


@pytest.mark.parametrize(("operation", "expected"), [("sum", 15), ("max", 5), ("avg", 3)])
def test_regex_reads_every_page(
    scaler: ScalerProcess, rabbitmq: RabbitBroker, five_matching: str, operation: str, expected: float
) -> None:
    # Five matches at two per page: KEDA reads only the first page and errors (kedacore/keda#7143).
    metadata = meta(rabbitmq.http_host(), five_matching, useRegex="true", pageSize="2", operation=operation)
    assert scaler.value(metadata) == expected


def test_every_page_and_every_trigger_share_one_pooled_http_client(
    scaler: ScalerProcess, rabbitmq: RabbitBroker, five_matching: str
) -> None:
    for operation in ("sum", "max", "avg"):
        scaler.value(meta(rabbitmq.http_host(), five_matching, useRegex="true", pageSize="1", operation=operation))
    assert scaler.metric("scaler_pooled_clients", pool="http") == 1  # one management endpoint, one pool


def test_regex_matching_nothing_reads_zero(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    assert scaler.value(meta(rabbitmq.http_host(), "^nothing-matches-this-.*", useRegex="true")) == 0
    assert scaler.is_active(meta(rabbitmq.http_host(), "^nothing-matches-this-.*", useRegex="true")) is False


# --- rate modes (KEDA's formulas) -----------------------------------------------------------------


def test_message_rate_is_the_publish_rate(scaler: ScalerProcess, rabbitmq: RabbitBroker, busy: dict[str, str]) -> None:
    metadata = meta(rabbitmq.http_host(), busy["published"], mode="MessageRate", value="10")
    value = against_broker(
        rabbitmq, busy["published"], lambda: scaler.value(metadata), lambda s: s[2], lambda s: s[2] > 0
    )
    assert 5 < value < 60  # published at about 20 a second
    assert scaler.is_active(metadata) is True  # messages are waiting, whatever the rate of the moment


def test_deliver_get_rate_is_the_consumption_rate(
    scaler: ScalerProcess, rabbitmq: RabbitBroker, busy: dict[str, str]
) -> None:
    metadata = meta(rabbitmq.http_host(), busy["flowing"], mode="DeliverGetRate", value="10")
    value = against_broker(
        rabbitmq, busy["flowing"], lambda: scaler.value(metadata), lambda s: s[3], lambda s: s[3] > 0
    )
    assert 5 < value < 60


def test_published_to_delivered_ratio(scaler: ScalerProcess, rabbitmq: RabbitBroker, busy: dict[str, str]) -> None:
    metadata = meta(rabbitmq.http_host(), busy["flowing"], mode="PublishedToDeliveredRatio", value="1.1")
    value = against_broker(
        rabbitmq,
        busy["flowing"],
        lambda: scaler.value(metadata),
        lambda s: s[2] / s[3],
        lambda s: s[2] > 0 and s[3] > 0,
    )
    assert 0.3 < value < 3  # consumed about as fast as published


def test_expected_queue_consumption_time(scaler: ScalerProcess, rabbitmq: RabbitBroker, busy: dict[str, str]) -> None:
    metadata = meta(rabbitmq.http_host(), busy["draining"], mode="ExpectedQueueConsumptionTime", value="30")
    value = against_broker(
        rabbitmq,
        busy["draining"],
        lambda: scaler.value(metadata),
        lambda s: (s[2] - s[3]) / s[3] + s[0] / s[3],
        lambda s: s[3] > 0,
    )
    assert value > 10  # about 200 messages at about 5 a second
    assert scaler.is_active(metadata) is True


@pytest.mark.parametrize("mode", ["PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"])
def test_nobody_consuming_reads_the_activation_value_and_is_active(
    scaler: ScalerProcess, rabbitmq: RabbitBroker, busy: dict[str, str], mode: str
) -> None:
    # KEDA's rule for a queue with traffic and no consumer (e.g. scaled to zero): activate.
    queue = busy["published"]
    metadata = meta(rabbitmq.http_host(), queue, mode=mode, value="2", activationValue="3")

    def publishing(stats: Stats) -> bool:
        return stats[2] > 0  # the rule applies while the broker reports a publish rate

    assert against_broker(rabbitmq, queue, lambda: scaler.value(metadata), lambda s: 3.0, publishing) == 3
    assert against_broker(rabbitmq, queue, lambda: float(scaler.is_active(metadata)), lambda s: 1.0, publishing)


def test_message_rate_is_active_with_waiting_messages_and_no_publishing(
    scaler: ScalerProcess, rabbitmq: RabbitBroker
) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 5)
    rabbitmq.wait_for_queue(
        queue, lambda q: q.get("messages") == 5 and snapshot(q)[2] == 0, "5 messages and a publish rate of 0"
    )
    metadata = meta(rabbitmq.http_host(), queue, mode="MessageRate", value="10", activationValue="2")
    assert scaler.value(metadata) == 0
    assert scaler.is_active(metadata) is True  # KEDA: publish rate > activation OR messages > activation


def test_empty_idle_queue_has_no_consumption_time_and_is_inactive(
    scaler: ScalerProcess, rabbitmq: RabbitBroker
) -> None:
    queue = rabbitmq.declare()
    rabbitmq.wait_for_queue(queue, lambda q: q.get("messages") == 0, "stats for the new queue")
    metadata = meta(rabbitmq.http_host(), queue, mode="ExpectedQueueConsumptionTime", value="30")
    assert scaler.value(metadata) == 0  # kedacore/keda#8033: an empty queue must let the workload scale to zero
    assert scaler.is_active(metadata) is False


# --- named connection --------------------------------------------------------------------------


def test_named_connection_supplies_host_and_credentials(start_scaler: StartScaler, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 6)
    rabbitmq.wait_for_messages(queue, 6)
    config = (
        "connections:\n"
        "  rabbit:\n"
        "    adapter: rabbitmq\n"
        "    metadata:\n"
        f"      host: http://127.0.0.1:{rabbitmq.management_port}/{rabbitmq.vhost}\n"
        f"      username: {rabbitmq.user}\n"
        "    fromEnv:\n"
        "      password: TEST_RABBIT_PASSWORD\n"
    )
    scaler = start_scaler(config=config, env={"TEST_RABBIT_PASSWORD": rabbitmq.password})
    trigger = {"adapter": "rabbitmq", "connection": "rabbit", "queueName": queue, "mode": "QueueLength", "value": "2"}
    assert scaler.value(trigger) == 6
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec({**trigger, "host": rabbitmq.http_host()})
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'host'" in err.value.details()
