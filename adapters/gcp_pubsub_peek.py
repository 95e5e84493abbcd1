"""`source: peek`: count a subscription's backlog by pulling without acking, then releasing at once.

Pulled messages are leased to us until we release them with an ack deadline of 0, which makes them
deliverable again immediately. A peek therefore costs one delivery attempt per message seen, which is
why subscriptions with a dead-letter policy are refused: peeking could dead-letter messages nobody
processed. Clients speak gRPC through grpc.aio (google.pubsub_v1's async clients): no thread, no blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from .api import (
    SourceNotFound,
    SourcePermissionDenied,
    SourcePrecondition,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnauthenticated,
    SourceUnavailable,
)
from .gcp_pubsub_auth import GoogleCredentials

GOOGLE_PUBSUB = "pubsub.googleapis.com:443"
_PULL_BATCH = 1000  # the API's cap on max_messages per Pull
_RELEASE_BATCH = 500  # ack ids per ModifyAckDeadline, well under the request size limit
_CHECK_TTL = 60.0  # how long a subscription's dead-letter / exactly-once check is trusted
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),  # a pull of 1000 messages can exceed gRPC's 4 MB default
    # Reconnect quickly once Pub/Sub (or the emulator) is back, instead of gRPC's default of up to 2 min.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3000),
]


@dataclass(frozen=True)
class PeekResult:
    count: int
    oldest_age: float  # seconds; 0 when nothing was seen


async def import_client_library() -> None:
    """Import google-cloud-pubsub on a thread, so the event loop keeps serving while it loads."""
    await asyncio.to_thread(importlib.import_module, "google.pubsub_v1")


class PubSubClients:
    """One gRPC channel with a subscriber and a publisher client on it, for one endpoint and identity."""

    def __init__(self, target: str, credentials: GoogleCredentials | None) -> None:
        # Deferred: google-cloud-pubsub takes ~0.5 s to import, and a scaler without Pub/Sub triggers
        # should not pay that at start-up. The adapter imports it on a thread before the first client.
        from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            # TLS only; the token goes per call (see `auth`), not through gRPC's metadata plugin, whose
            # synchronous google-auth refresh could otherwise run on the event loop.
            self.channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS)
        self.target = target
        self.credentials = credentials
        self.subscriber = SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=self.channel))
        self.publisher = PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=self.channel))
        # subscription path -> (trusted until, refusal or None)
        self.checked: dict[str, tuple[float, SourcePrecondition | None]] = {}

    async def auth(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: a bearer token refreshed on a thread, or nothing for the emulator."""
        if self.credentials is None:
            return ()
        return (("authorization", f"Bearer {await self.credentials.token()}"),)

    async def close(self) -> None:
        await self.channel.close()


@contextlib.contextmanager
def google_errors_as_adapter_errors(what: str, target: str, timeout: float) -> Iterator[None]:
    """google.api_core errors -> the adapter errors the engine maps to gRPC codes, naming the object."""
    from google.api_core import exceptions as google_errors  # deferred with the client (see PubSubClients)

    try:
        yield
    except google_errors.NotFound:
        raise SourceNotFound(f"{what} does not exist (Pub/Sub at {target})") from None
    except google_errors.PermissionDenied as exc:
        raise SourcePermissionDenied(f"Pub/Sub refused access to {what}: {exc.message}") from None
    except google_errors.Unauthenticated as exc:
        raise SourceUnauthenticated(f"Pub/Sub refused the credentials for {what}: {exc.message}") from None
    except google_errors.FailedPrecondition as exc:
        raise SourcePrecondition(f"Pub/Sub cannot peek {what}: {exc.message}") from None
    except google_errors.InvalidArgument as exc:
        raise SourceRejectedQuery(f"Pub/Sub rejected the request for {what}: {exc.message}") from None
    except google_errors.DeadlineExceeded:
        raise SourceTimeout(f"Pub/Sub at {target} did not answer within {timeout:g}s") from None
    except google_errors.GoogleAPICallError as exc:
        # UNAVAILABLE (emulator or network down), RESOURCE_EXHAUSTED, INTERNAL, ...
        raise SourceUnavailable(f"cannot reach Pub/Sub at {target}: {type(exc).__name__}: {exc.message}") from None
    except google_errors.RetryError as exc:
        raise SourceUnavailable(f"cannot reach Pub/Sub at {target}: {exc.message}") from None


async def check_peekable(clients: PubSubClients, subscription: str, timeout: float) -> None:
    """Refuse subscriptions a peek could harm; the answer is cached for a minute per subscription."""
    now = time.monotonic()
    cached = clients.checked.get(subscription)
    if cached is not None and cached[0] > now:
        if cached[1] is not None:
            raise cached[1].with_traceback(None)
        return
    with google_errors_as_adapter_errors(f"subscription '{subscription}'", clients.target, timeout):
        info = await clients.subscriber.get_subscription(
            subscription=subscription, retry=None, timeout=timeout, metadata=await clients.auth()
        )
    refusal: SourcePrecondition | None = None
    if info.dead_letter_policy.dead_letter_topic:
        refusal = SourcePrecondition(
            f"subscription '{subscription}' has a dead-letter policy: a peek counts as a delivery attempt and "
            "could dead-letter messages nobody processed; use source: monitoring (without activationSource: peek)"
        )
    elif info.enable_exactly_once_delivery:
        refusal = SourcePrecondition(
            f"subscription '{subscription}' uses exactly-once delivery: releasing a peeked message can fail "
            "per message and then hides it from consumers until its ack deadline; use source: monitoring"
        )
    # Forget expired checks while at it, so subscriptions nobody scales any more leave nothing behind.
    for name in [name for name, (until, _) in clients.checked.items() if until <= now]:
        del clients.checked[name]
    clients.checked[subscription] = (now + _CHECK_TTL, refusal)
    if refusal is not None:
        raise refusal


async def peek_subscription(clients: PubSubClients, subscription: str, limit: int, timeout: float) -> PeekResult:
    """Pull up to `limit` messages without acking, release them all, report count and oldest age."""
    await check_peekable(clients, subscription, timeout)
    what = f"subscription '{subscription}'"
    seen: dict[str, Any] = {}  # message id -> publish time (a redelivery within one peek is counted once)
    ack_ids: list[str] = []
    try:
        with google_errors_as_adapter_errors(what, clients.target, timeout):
            while len(seen) < limit:
                response = await clients.subscriber.pull(
                    subscription=subscription,
                    max_messages=min(_PULL_BATCH, limit - len(seen)),
                    return_immediately=True,
                    retry=None,
                    timeout=timeout,
                    metadata=await clients.auth(),
                )
                received = response.received_messages
                if not received:
                    break
                for message in received:
                    ack_ids.append(message.ack_id)
                    seen[message.message.message_id] = message.message.publish_time
    except SourceNotFound:
        clients.checked.pop(subscription, None)
        raise
    finally:
        if ack_ids:
            # Shielded: a caller that gives up (timeout, cancelled RPC) must still give the messages back.
            await asyncio.shield(_release(clients, subscription, ack_ids, timeout))
    return PeekResult(len(seen), _oldest_age(seen.values()))


async def _release(clients: PubSubClients, subscription: str, ack_ids: list[str], timeout: float) -> None:
    with google_errors_as_adapter_errors(f"subscription '{subscription}'", clients.target, timeout):
        for start in range(0, len(ack_ids), _RELEASE_BATCH):
            await clients.subscriber.modify_ack_deadline(
                subscription=subscription,
                ack_ids=ack_ids[start : start + _RELEASE_BATCH],
                ack_deadline_seconds=0,
                retry=None,
                timeout=timeout,
                metadata=await clients.auth(),
            )


async def topic_subscriptions(clients: PubSubClients, topic: str, timeout: float) -> list[str]:
    with google_errors_as_adapter_errors(f"topic '{topic}'", clients.target, timeout):
        pager = await clients.publisher.list_topic_subscriptions(
            topic=topic, retry=None, timeout=timeout, metadata=await clients.auth()
        )
        names = [name async for name in pager]
        if not names:
            # An empty list may mean "no such topic" (the emulator answers so): ask, so NOT_FOUND is reported.
            await clients.publisher.get_topic(topic=topic, retry=None, timeout=timeout, metadata=await clients.auth())
        return names


async def peek_topic(clients: PubSubClients, topic: str, limit: int, timeout: float) -> PeekResult:
    """The largest backlog (and the oldest message) among the topic's subscriptions."""
    subscriptions = await topic_subscriptions(clients, topic, timeout)
    results = await asyncio.gather(*(peek_subscription(clients, s, limit, timeout) for s in subscriptions))
    return PeekResult(
        max((r.count for r in results), default=0),
        max((r.oldest_age for r in results), default=0.0),
    )


def _oldest_age(publish_times: Any) -> float:
    times: list[datetime] = [t for t in publish_times if t is not None]
    if not times:
        return 0.0
    oldest = min(times)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, float((datetime.now(UTC) - oldest).total_seconds()))
