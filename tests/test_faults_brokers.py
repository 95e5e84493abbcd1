"""RabbitMQ stopped and restarted, and the Pub/Sub emulator killed and restarted, under a stream and polling.

The same fault test as tests/test_faults_prometheus.py, for the brokers: calls fail within the source
timeout with UNAVAILABLE, the stream stays open and reports again once the broker is back, and after
hundreds of failed polls the scaler holds no more fds, threads, asyncio tasks, pooled clients or broker
connections than before. Only brokers of the test's own are stopped: a private RabbitMQ node (never the
shared one on :5672) and a per-test emulator restarted on its port.
"""

from __future__ import annotations

import grpc

from tests.fixtures._faults import FAILED_POLLS, Footprint, KedaPolling, failed_queries, fast_failing_settings
from tests.fixtures._util import wait_for
from tests.fixtures.pubsub import PubSubEmulator, google_isolated_env
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import ScalerProcess, StartScaler, StreamReader

SOURCE_TIMEOUT_MS = 1000


def healthy_baseline(scaler: ScalerProcess, metadata: dict[str, str], source_port: int) -> Footprint:
    """Polls until the scaler is warm (pools, channels, task counts settled), then measures with the stream
    open and no unary call in flight."""
    healthy = KedaPolling(scaler, metadata)
    wait_for(lambda: healthy.codes.count(grpc.StatusCode.OK) >= 20, 15, "healthy polls")
    healthy.finish()
    assert set(healthy.codes) == {grpc.StatusCode.OK}
    return Footprint.settled(scaler, source_port)


def fail_polls_while_down(
    scaler: ScalerProcess, metadata: dict[str, str], adapter: str, stream: StreamReader, source_port: int
) -> Footprint:
    """KEDA polls the downed source until the scaler has made FAILED_POLLS failed queries; checks how they failed."""
    before = failed_queries(scaler, adapter)
    polling = KedaPolling(scaler, metadata)
    wait_for(
        lambda: failed_queries(scaler, adapter) - before >= FAILED_POLLS, 60, f"{FAILED_POLLS} polls", interval=0.2
    )
    polling.finish()
    during = Footprint.settled(scaler, source_port)
    print(f"\n{adapter}: {len(polling.codes)} KEDA calls, slowest {polling.slowest * 1000:.0f} ms")
    assert set(polling.codes) == {grpc.StatusCode.UNAVAILABLE}, "while the broker is down every call is UNAVAILABLE"
    assert len(polling.codes) >= 20
    assert polling.slowest < SOURCE_TIMEOUT_MS / 1000, "calls fail within the configured source timeout"
    assert not stream.ended.is_set() and stream.received == [stream.received[0]], "the stream stays open, silent"
    return during


def report(adapter: str, baseline: Footprint, during: Footprint, after: Footprint) -> None:
    print(
        f"{adapter} footprint: baseline {baseline}\n  after {FAILED_POLLS}+ failed polls {during}\n  recovered {after}"
    )


def test_rabbitmq_stopped_and_restarted_under_a_stream_and_polling(
    start_scaler: StartScaler, private_rabbitmq: RabbitBroker
) -> None:
    broker = private_rabbitmq
    assert broker.node is not None
    scaler = start_scaler(**fast_failing_settings(SOURCE_TIMEOUT_MS / 1000))
    queue = broker.declare(kind="quorum", vhost="/")  # durable: it survives the restart
    broker.close_clients()
    metadata = {
        "adapter": "rabbitmq",
        "host": broker.amqp_host("/"),
        "queueName": queue,
        "mode": "QueueLength",
        "value": "5",
        "timeout": str(SOURCE_TIMEOUT_MS),
    }
    stream = scaler.stream_is_active(metadata)
    assert stream.next().result is False
    baseline = healthy_baseline(scaler, metadata, broker.amqp_port)
    assert baseline.connections_to_source == 1, "one pooled AMQP connection serves the stream and the polls"
    # The management API's connection list lags by its stats interval.
    wait_for(lambda: len(broker.scaler_connections(scaler.proc.pid, "/")) == 1, 15, "the scaler's connection")

    broker.node.stop_app()
    during = fail_polls_while_down(scaler, metadata, "rabbitmq", stream, broker.amqp_port)
    assert during.not_above(baseline) == [], f"leak after {FAILED_POLLS} failed polls: {during} vs {baseline}"
    assert during.connections_to_source == 0

    broker.node.start_app()
    broker.publish(queue, 3, vhost="/")
    broker.close_clients()
    # The same stream, never reopened, reports the broker's new state once it is back.
    assert stream.next(timeout=30).result is True
    assert not stream.ended.is_set()
    assert scaler.value(metadata) == 3
    after = Footprint.settled(scaler, broker.amqp_port)
    report("rabbitmq", baseline, during, after)
    assert after.not_above(baseline) == [], f"leak after recovery: {after} vs {baseline}"
    # One connection on the broker again: the dead one was dropped, not kept beside the new one.
    wait_for(lambda: broker.scaler_connections(scaler.proc.pid, "/"), 15, "the scaler's new connection")
    assert len(broker.scaler_connections(scaler.proc.pid, "/")) == 1
    assert "stream kept open" in scaler.logs()
    stream.cancel()


def test_pubsub_emulator_killed_and_restarted_under_a_stream_and_polling(
    start_scaler: StartScaler, own_pubsub_emulator: PubSubEmulator
) -> None:
    emulator = own_pubsub_emulator
    assert emulator.port is not None
    topic = emulator.topic("fault")
    subscription = emulator.subscription(topic, "fault-sub")
    scaler = start_scaler(env=google_isolated_env(emulator.host), **fast_failing_settings(SOURCE_TIMEOUT_MS / 1000))
    metadata = {"adapter": "gcp-pubsub", "subscriptionName": subscription, "value": "5"}
    stream = scaler.stream_is_active(metadata)
    assert stream.next().result is False
    baseline = healthy_baseline(scaler, metadata, emulator.port)
    assert baseline.connections_to_source >= 1, "the pooled gRPC channel is connected to the emulator"

    emulator.stop()  # the whole process group: the emulator is killed, not asked to drain
    during = fail_polls_while_down(scaler, metadata, "gcp-pubsub", stream, emulator.port)
    assert during.not_above(baseline) == [], f"leak after {FAILED_POLLS} failed polls: {during} vs {baseline}"
    assert during.connections_to_source == 0

    # Same port, fresh state (the emulator keeps nothing): recreate the objects, then publish.
    emulator.start()
    emulator.publisher.create_topic(name=topic)
    emulator.subscriber.create_subscription(request={"name": subscription, "topic": topic})
    emulator.publish(topic, 3)
    assert stream.next(timeout=30).result is True
    assert not stream.ended.is_set()
    assert scaler.value(metadata) == 3
    # Back to the baseline's state (an empty subscription): with messages to peek, every poll also has a
    # shielded release task in flight, which would be counted against a baseline that had none.
    assert emulator.ack(subscription, 3) == 3
    assert stream.next(timeout=30).result is False
    after = Footprint.settled(scaler, emulator.port)
    report("gcp-pubsub", baseline, during, after)
    assert after.not_above(baseline) == [], f"leak after recovery: {after} vs {baseline}"
    assert "stream kept open" in scaler.logs()
    stream.cancel()
