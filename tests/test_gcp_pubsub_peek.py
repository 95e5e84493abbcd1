"""The gcp-pubsub adapter's peek source, through a real gRPC channel, against the real Pub/Sub emulator."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.fixtures._util import wait_for
from tests.fixtures.pubsub import PROJECT, PubSubEmulator, google_isolated_env
from tests.fixtures.scaler import ScalerProcess, StartScaler


def meta(subscription: str = "", topic: str = "", **extra: str) -> dict[str, str]:
    found = {"subscriptionName": subscription} if subscription else {"topicName": topic}
    return {"scalerAddress": "scaler.keda:9090", "adapter": "gcp-pubsub", **found, **extra}


@pytest.fixture(scope="module")
def scaler(pubsub_scaler: ScalerProcess) -> ScalerProcess:
    return pubsub_scaler  # the shared emulator-aware scaler (tests/fixtures/pubsub.py)


def test_peek_counts_published_messages(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    assert scaler.value(meta(subscription)) == 0
    pubsub_emulator.publish(topic, 25)
    time.sleep(0.3)  # past the cache TTL
    assert scaler.value(meta(subscription)) == 25
    # Peeking released every message: a second peek sees them all again.
    time.sleep(0.3)
    assert scaler.value(meta(subscription)) == 25


def test_acked_messages_leave_the_count(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    pubsub_emulator.publish(topic, 20)
    time.sleep(0.3)
    assert scaler.value(meta(subscription)) == 20
    # A real consumer can pull right after a peek: the peek's lease was released at once.
    assert pubsub_emulator.ack(subscription, 8) == 8
    time.sleep(0.3)
    assert scaler.value(meta(subscription)) == 12


def test_short_name_with_project_id_reads_the_same_subscription(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    pubsub_emulator.publish(topic, 3)
    short = subscription.rsplit("/", 1)[1]
    assert scaler.value(meta(short, projectId=PROJECT)) == 3


def test_subscription_size_is_an_alias_of_num_undelivered_messages(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    pubsub_emulator.publish(topic, 4)
    assert scaler.value(meta(subscription, mode="SubscriptionSize")) == 4


def test_peek_limit_caps_the_count(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    pubsub_emulator.publish(topic, 30)
    assert scaler.value(meta(subscription, peekLimit="10")) == 10
    time.sleep(0.3)
    assert scaler.value(meta(subscription, peekLimit="1000")) == 30


def test_peek_counts_beyond_one_pull_batch(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    # One Pull returns at most 1000 messages: the peek keeps pulling (holding its leases) until the limit.
    pubsub_emulator.publish(topic, 1500)
    assert scaler.value(meta(subscription, peekLimit="5000")) == 1500


def test_oldest_unacked_message_age_grows_with_time(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    age_meta = meta(subscription, mode="OldestUnackedMessageAge")
    assert scaler.value(age_meta) == 0  # nothing waiting: no age
    pubsub_emulator.publish(topic, 2)
    first = scaler.value(age_meta)
    time.sleep(2)
    second = scaler.value(age_meta)
    assert 0 <= first < 2
    assert second >= first + 1.5
    assert second < first + 5


def test_is_active_follows_the_backlog_and_activation_value(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    assert scaler.is_active(meta(subscription)) is False
    pubsub_emulator.publish(topic, 3)
    time.sleep(0.3)
    assert scaler.is_active(meta(subscription)) is True
    assert scaler.is_active(meta(subscription, activationValue="3")) is False  # equal is inactive
    assert scaler.is_active(meta(subscription, activationValue="2")) is True


def test_dead_letter_subscription_is_refused(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str
) -> None:
    dead = pubsub_emulator.topic("dead")
    subscription = pubsub_emulator.subscription(
        topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5}
    )
    pubsub_emulator.publish(topic, 2)
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(subscription))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "dead-letter" in err.value.details() and subscription in err.value.details()
    # Refused before pulling: no delivery attempt was spent on the messages.
    response = pubsub_emulator.subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert len(response.received_messages) == 2
    assert all(m.delivery_attempt <= 1 for m in response.received_messages)


def test_exactly_once_subscription_is_refused(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str
) -> None:
    subscription = pubsub_emulator.subscription(topic, enable_exactly_once_delivery=True)
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(subscription))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exactly-once" in err.value.details()


def test_topic_reads_the_largest_backlog_among_its_subscriptions(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str
) -> None:
    fast, slow = pubsub_emulator.subscription(topic), pubsub_emulator.subscription(topic)
    pubsub_emulator.publish(topic, 12)
    assert pubsub_emulator.ack(fast, 9) == 9
    time.sleep(0.3)
    assert scaler.value(meta(subscription=fast)) == 3
    assert scaler.value(meta(subscription=slow)) == 12
    assert scaler.value(meta(topic=topic)) == 12
    short = topic.rsplit("/", 1)[1]
    assert scaler.value(meta(topic=short, projectId=PROJECT, mode="OldestUnackedMessageAge")) >= 0


def test_topic_without_subscriptions_reads_zero(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, topic: str
) -> None:
    pubsub_emulator.publish(topic, 5)  # dropped by Pub/Sub: nobody subscribed
    assert scaler.value(meta(topic=topic)) == 0


def test_missing_subscription_is_not_found(scaler: ScalerProcess) -> None:
    missing = f"projects/{PROJECT}/subscriptions/no-such-subscription"
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(missing))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing in err.value.details()


def test_missing_topic_is_not_found(scaler: ScalerProcess) -> None:
    missing = f"projects/{PROJECT}/topics/no-such-topic"
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(topic=missing))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing in err.value.details()


def test_stream_is_active_flips_soon_after_the_first_publish(
    start_scaler: StartScaler, pubsub_emulator: PubSubEmulator, topic: str, subscription: str
) -> None:
    # Default push interval (1 s): the flip must arrive within about one interval, not minutes.
    process = start_scaler(env=google_isolated_env(pubsub_emulator.host))
    stream = process.stream_is_active(meta(subscription))
    try:
        assert stream.next(timeout=10).result is False
        pubsub_emulator.publish(topic, 1)
        assert stream.next(timeout=3).result is True
    finally:
        stream.cancel()


def test_stopped_emulator_is_unavailable_then_recovers(
    start_scaler: StartScaler, own_pubsub_emulator: PubSubEmulator
) -> None:
    emulator = own_pubsub_emulator
    topic = emulator.topic()
    subscription = emulator.subscription(topic)
    emulator.publish(topic, 4)
    process = start_scaler(env=google_isolated_env(emulator.host), cache_ttl=0.2, error_cache_ttl=0.2)
    assert process.value(meta(subscription)) == 4

    emulator.stop()
    time.sleep(0.3)  # past the cache TTL
    with pytest.raises(grpc.RpcError) as err:
        process.metrics(meta(subscription))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert emulator.host in err.value.details()

    # Same port, fresh state (the emulator keeps nothing): recreate the objects, then read again.
    emulator.start()
    emulator.publisher.create_topic(name=topic)
    emulator.subscriber.create_subscription(request={"name": subscription, "topic": topic})
    emulator.publish(topic, 6)

    def recovered() -> bool:
        try:
            return process.value(meta(subscription)) == 6
        except grpc.RpcError:
            return False

    wait_for(recovered, 15, "the scaler to read the restarted emulator")
