"""The RabbitMQ adapter over AMQP, against a real broker, through a real gRPC channel."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.fixtures._util import free_port, wait_for
from tests.fixtures.rabbitmq import RabbitBroker
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


def error_of(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.mark.parametrize("kind", ["classic", "quorum"])
def test_queue_length_is_the_ready_message_count(scaler: ScalerProcess, rabbitmq: RabbitBroker, kind: str) -> None:
    queue = rabbitmq.declare(kind=kind)
    rabbitmq.publish(queue, 7)
    assert scaler.value(meta(rabbitmq.amqp_host(), queue)) == 7
    assert scaler.is_active(meta(rabbitmq.amqp_host(), queue, activationValue="6")) is True
    assert scaler.is_active(meta(rabbitmq.amqp_host(), queue, activationValue="7")) is False


def test_vhost_in_host_and_vhost_name_read_the_same_queue(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 3)
    in_host = meta(rabbitmq.amqp_host(), queue)
    by_name = meta(rabbitmq.amqp_host("/"), queue, vhostName=rabbitmq.vhost)
    assert scaler.value(in_host) == 3
    assert scaler.value(by_name) == 3


def test_default_vhost_is_slash(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare(vhost="/")
    try:
        rabbitmq.publish(queue, 2, vhost="/")
        bare = rabbitmq.amqp_host("/").removesuffix("%2F")  # amqp://user:pw@host:port/
        assert scaler.value(meta(bare, queue)) == 2
        assert scaler.value(meta(bare.removesuffix("/"), queue)) == 2
    finally:
        rabbitmq.channel("/").queue_delete(queue)


def test_unacknowledged_messages_are_not_counted_over_amqp(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 5)
    holder = rabbitmq.channel()
    for _ in range(2):
        method, _, _ = holder.basic_get(queue, auto_ack=False)
        assert method is not None
    assert scaler.value(meta(rabbitmq.amqp_host(), queue)) == 3
    holder.connection.close()


def test_missing_queue_is_not_found_naming_queue_and_vhost(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    error = error_of(lambda: scaler.value(meta(rabbitmq.amqp_host(), "no-such-queue")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-queue" in error.details() and rabbitmq.vhost in error.details()


def test_missing_queue_closes_only_the_channel(start_scaler: StartScaler, rabbitmq: RabbitBroker) -> None:
    scaler = start_scaler(cache_ttl=0.05, error_cache_ttl=0.05)
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 4)
    good, missing = meta(rabbitmq.amqp_host(), queue), meta(rabbitmq.amqp_host(), "gone-queue")
    assert scaler.value(good) == 4
    [before] = wait_for(lambda: rabbitmq.scaler_connections(scaler.proc.pid), 10, "the scaler's connection to show")
    for _ in range(5):
        assert error_of(lambda: scaler.value(missing)).code() == grpc.StatusCode.NOT_FOUND
        assert scaler.value(good) == 4  # a fresh channel on the same connection
    [after] = rabbitmq.scaler_connections(scaler.proc.pid)
    assert after["name"] == before["name"]  # the same connection: never re-dialled, never leaked
    assert scaler.metric("scaler_pooled_clients", pool="rabbitmq-amqp") == 1


def test_wrong_password_is_unauthenticated_and_never_shown(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    host = rabbitmq.amqp_host(password="Wr0ng-pa55word")
    error = error_of(lambda: scaler.value(meta(host, "any-queue")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Wr0ng-pa55word" not in error.details()
    assert "Wr0ng-pa55word" not in scaler.logs()
    assert "Wr0ng-pa55word" not in scaler.metrics_text()


def test_username_and_password_keys_override_the_url(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 1)
    host = rabbitmq.amqp_host(password="not-the-password")
    assert scaler.value(meta(host, queue, username=rabbitmq.user, password=rabbitmq.password)) == 1


def test_missing_vhost_is_not_found_naming_it(scaler: ScalerProcess, rabbitmq: RabbitBroker) -> None:
    error = error_of(lambda: scaler.value(meta(rabbitmq.amqp_host("no-such-vhost"), "q")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-vhost" in error.details()


def test_closed_port_is_unavailable(scaler: ScalerProcess) -> None:
    error = error_of(lambda: scaler.value(meta(f"amqp://guest:guest@127.0.0.1:{free_port()}/", "q")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_200_scaled_objects_polling_5_times_share_one_connection_and_one_query_per_ttl(
    start_scaler: StartScaler, rabbitmq: RabbitBroker
) -> None:
    ttl = 3.0
    scaler = start_scaler(cache_ttl=ttl)
    queue = rabbitmq.declare()
    rabbitmq.publish(queue, 9)
    metadata = meta(rabbitmq.amqp_host(), queue)
    names = [f"worker-{i}" for i in range(200)]

    def poll(name: str) -> tuple[float, bool]:
        # KEDA's poll of one external trigger: GetMetrics, then IsActive with the same ref.
        return scaler.value(metadata, name=name), scaler.is_active(metadata, name=name)

    with ThreadPoolExecutor(32) as pool:
        for round_no in range(1, 6):
            results = list(pool.map(poll, names))
            assert results == [(9.0, True)] * 200
            assert scaler.metric("scaler_source_queries_total", adapter="rabbitmq") == round_no
            # The management API lists a new connection a moment after it opens.
            assert len(wait_for(lambda: rabbitmq.scaler_connections(scaler.proc.pid), 10, "a connection")) == 1
            time.sleep(ttl + 0.3)  # the next poll round falls in a new TTL
    assert len(rabbitmq.scaler_connections(scaler.proc.pid)) == 1
    assert scaler.metric("scaler_pooled_clients", pool="rabbitmq-amqp") == 1


def test_stream_is_active_turns_true_within_a_second_of_the_first_message(
    scaler: ScalerProcess, rabbitmq: RabbitBroker
) -> None:
    queue = rabbitmq.declare()
    stream = scaler.stream_is_active(meta(rabbitmq.amqp_host(), queue))
    try:
        assert stream.next(timeout=10).result is False
        rabbitmq.publish(queue, 1)
        assert stream.next(timeout=2).result is True
    finally:
        stream.cancel()


def test_stopped_broker_is_unavailable_and_readings_resume_after_restart(
    start_scaler: StartScaler, private_rabbitmq: RabbitBroker
) -> None:
    broker = private_rabbitmq
    assert broker.node is not None
    scaler = start_scaler(cache_ttl=0.2, error_cache_ttl=0.2)
    queue = broker.declare(kind="quorum", vhost="/")  # durable: it survives the restart
    broker.publish(queue, 6, vhost="/")
    broker.close_clients()
    metadata = meta(broker.amqp_host("/"), queue, timeout="2000")
    assert scaler.value(metadata) == 6

    broker.node.stop_app()
    error = error_of(lambda: scaler.value(metadata))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()

    broker.node.start_app()

    def reads_again() -> bool:
        try:
            return scaler.value(metadata) == 6
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            return False

    wait_for(reads_again, 30, "readings to resume after the broker restarted")
    assert len(wait_for(lambda: broker.scaler_connections(scaler.proc.pid, "/"), 10, "a connection")) == 1
    assert scaler.metric("scaler_pooled_clients", pool="rabbitmq-amqp") == 1


def test_unreachable_broker_is_dialled_with_backoff_not_on_every_reading(start_scaler: StartScaler) -> None:
    scaler = start_scaler(cache_ttl=0.05, error_cache_ttl=0.05)
    metadata = meta(f"amqp://guest:guest@127.0.0.1:{free_port()}/", "q")
    deadline = time.monotonic() + 3
    readings = 0
    while time.monotonic() < deadline:
        assert error_of(lambda: scaler.value(metadata)).code() == grpc.StatusCode.UNAVAILABLE
        readings += 1
        time.sleep(0.05)
    dials = scaler.logs().count("AMQP dial failed")
    assert readings > 20
    # Backoff 0.5 s, 1 s, 2 s ...: at most 4 dials in 3 s, however often KEDA asks.
    assert 2 <= dials <= 4, dials
