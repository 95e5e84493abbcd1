"""AMQP 0-9-1 queue depth: one connection per (broker, vhost, credentials) for the whole process.

KEDA opens a connection per ScaledObject and leaks them (kedacore/keda#6266, #6283). Here every trigger
on the same broker, vhost and credentials shares one pooled connection and one channel; a missing queue
closes only that channel (the broker's 404 rule), and the next reading opens a new channel on the same
connection. A broken connection is dropped and re-dialled on a later reading, with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from .api import (
    AdapterError,
    ClientPool,
    Resolve,
    SourceNotFound,
    SourcePermissionDenied,
    SourceUnauthenticated,
    SourceUnavailable,
    idna_host,
    system_resolve,
)
from .files import TlsFiles, client_tls_context
from .lazy import lazy_module

if TYPE_CHECKING:
    import aiormq
    import aiormq.exceptions as amqp_errors
    from aiormq.connection import TransportFactory
    from yarl import URL
else:
    # Imported by the first AMQP reading, not at start-up (aiormq brings pamqp and yarl: tens of ms).
    aiormq = lazy_module("aiormq")
    amqp_errors = lazy_module("aiormq.exceptions")

log = logging.getLogger(__name__)

CONNECTION_NAME = "keda-queue-scaler"
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class AmqpTarget:
    """What a pooled connection is keyed by. The password takes part in equality but never in repr."""

    host: str
    port: int
    tls: bool
    vhost: str
    username: str
    password: str = field(repr=False)
    verify: bool = True
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    external: bool = False  # SASL EXTERNAL: the client certificate is the login (no username/password)
    pem: TlsFiles = field(default_factory=TlsFiles)  # PEM contents (KEDA's ca/cert/key/keyPassword); repr hides them
    # The approved addresses of `host` (set by AmqpClients from its resolve hook): the connection goes to
    # one of them, never to a second lookup of the name. Part of the key: a new answer, a new connection.
    addresses: tuple[str, ...] = ()

    @property
    def login(self) -> str:
        """Who logs in, for messages: the user, or the certificate."""
        return "the client certificate (SASL EXTERNAL)" if self.external else f"user '{self.username}'"

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'amqps' if self.tls else 'amqp'}://{host}:{self.port}"

    def url(self) -> URL:
        from yarl import URL

        # aiormq reads the vhost from the path and turns %2F back into '/': pre-escape it so a vhost
        # containing '/' (the default vhost '/' included) survives the round trip.
        if self.external:
            # aiormq's `auth` query parameter picks the SASL mechanism; EXTERNAL sends no credentials.
            return URL.build(
                scheme="amqps" if self.tls else "amqp",
                host=self.host,
                port=self.port,
                path="/" + self.vhost.replace("/", "%2F"),
                query={"auth": "external"},
            )
        return URL.build(
            scheme="amqps" if self.tls else "amqp",
            host=self.host,
            port=self.port,
            user=self.username,
            password=self.password,
            path="/" + self.vhost.replace("/", "%2F"),
        )

    async def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        files = TlsFiles(
            self.ca_file,
            self.cert_file,
            self.key_file,
            self.pem.ca_pem,
            self.pem.cert_pem,
            self.pem.key_pem,
            self.pem.key_password,
        )
        return await client_tls_context(files, verify=self.verify)


class PinnedTransport:
    """A TransportFactory (aiormq calls only `create`; a plain class, so that defining it imports no aiormq):
    opens the AMQP socket to the approved addresses, in order, while TLS still verifies and names `host`.

    aiormq's own factories pass the URL's host to asyncio, which looks it up again (and with Python's
    IDNA 2003 codec, another host for some international names): this one never resolves anything.
    """

    def __init__(self, target: AmqpTarget) -> None:
        self.target = target

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        context = await provider.get_context() if self.target.tls and provider is not None else None
        server_hostname = idna_host(self.target.host) if context is not None else None
        error: OSError | None = None
        for address in self.target.addresses:
            try:
                return await asyncio.open_connection(
                    host=address, port=self.target.port, ssl=context, server_hostname=server_hostname, **kwargs
                )
            except OSError as exc:
                error = exc
        raise amqp_errors.AMQPConnectionError(*(error.args if error else ("no approved address",)))


class AmqpClient:
    """One connection and the one channel its passive declares share (reopened after the broker closes it)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._channel: Any = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()  # held so the loop cannot drop them half-way

    @property
    def broken(self) -> bool:
        return bool(self.connection.is_closed)

    async def channel(self) -> Any:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self.connection.channel()
            return self._channel

    def forget_channel(self, channel: Any) -> None:
        """The channel is closed or in an unknown state (a cancelled RPC): the next call opens another."""
        if self._channel is channel:
            self._channel = None
        if not channel.is_closed:
            task = asyncio.get_running_loop().create_task(_close_quietly(channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        await self.connection.close()


async def _close_quietly(closable: Any) -> None:
    try:
        await closable.close()
    except Exception as exc:  # the channel may die with its connection; nothing left to do
        log.debug("closing an AMQP channel failed: %s", type(exc).__name__)


@dataclass
class _Backoff:
    delay: float
    retry_at: float
    error: AdapterError


class AmqpClients:
    """The process-wide AMQP connections of the RabbitMQ adapter."""

    def __init__(self, resolve: Resolve = system_resolve) -> None:
        self.resolve = resolve
        self.pool: ClientPool[AmqpTarget, AmqpClient] = ClientPool("amqp", self._dial, self._hang_up)
        self._backoff: dict[AmqpTarget, _Backoff] = {}
        self._connect_timeout: dict[AmqpTarget, float] = {}
        self.connection_name = f"{CONNECTION_NAME}@{socket.gethostname()}/{os.getpid()}"

    async def message_count(self, target: AmqpTarget, queue: str, timeout: float) -> int:
        """Ready messages in `queue`, from a passive queue.declare on the shared connection."""
        target = replace(target, addresses=await self.resolve(target.host, target.port))
        client = await self._client(target, timeout)
        try:
            channel = await client.channel()
        except (amqp_errors.AMQPError, ConnectionError, RuntimeError) as exc:
            await self._drop(target, client)
            raise SourceUnavailable(f"RabbitMQ at {target.endpoint}: the connection broke ({_reason(exc)})") from None
        try:
            declared = await channel.queue_declare(queue, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            client.forget_channel(channel)
            raise SourceNotFound(f"queue '{queue}' not found in vhost '{target.vhost}' on {target.endpoint}") from None
        except amqp_errors.ChannelAccessRefused:
            client.forget_channel(channel)
            raise SourcePermissionDenied(
                f"user '{target.username}' may not read queue '{queue}' in vhost '{target.vhost}'"
            ) from None
        except asyncio.CancelledError:
            client.forget_channel(channel)  # the reply may still arrive: never reuse this channel
            raise
        except (amqp_errors.AMQPError, ConnectionError, RuntimeError) as exc:
            client.forget_channel(channel)
            if client.broken:
                await self._drop(target, client)
            raise SourceUnavailable(f"RabbitMQ at {target.endpoint} failed the query: {_reason(exc)}") from None
        return int(declared.message_count or 0)

    async def _client(self, target: AmqpTarget, timeout: float) -> AmqpClient:
        client = await self._pooled(target, timeout)
        if client.broken:
            # The broker went away since the last reading: drop the dead connection and dial again.
            await self._drop(target, client)
            client = await self._pooled(target, timeout)
        return client

    async def _drop(self, target: AmqpTarget, client: AmqpClient) -> None:
        """Discard the pooled connection only if it is still this one: a concurrent reading may have replaced it."""
        if target in self.pool and await self.pool.get(target) is client:
            await self.pool.discard(target)

    async def _pooled(self, target: AmqpTarget, timeout: float) -> AmqpClient:
        self._connect_timeout[target] = timeout
        return await self.pool.get(target)

    async def _dial(self, target: AmqpTarget) -> AmqpClient:
        backoff = self._backoff.get(target)
        now = time.monotonic()
        if backoff is not None and now < backoff.retry_at:
            error = type(backoff.error)(f"{backoff.error.message} (next attempt in {backoff.retry_at - now:.1f}s)")
            raise error
        try:
            client = await self._connect(target)
        except AdapterError as error:
            delay = min(_BACKOFF_MAX, backoff.delay * 2) if backoff else _BACKOFF_FIRST
            self._backoff[target] = _Backoff(delay, time.monotonic() + delay, error)
            log.warning("AMQP dial failed: %s; next attempt in %.1fs", error.message, delay)
            raise
        self._backoff.pop(target, None)
        return client

    async def _connect(self, target: AmqpTarget) -> AmqpClient:
        # Leave a little of the reading's timeout so a slow dial reports UNAVAILABLE, not DEADLINE_EXCEEDED.
        timeout = max(0.1, self._connect_timeout.get(target, 5.0) * 0.9)
        where = target.endpoint
        context = await target.ssl_context()  # outside the try: a file problem is not a TLS failure of the broker
        try:
            async with asyncio.timeout(timeout):
                connection = await aiormq.connect(
                    target.url(),
                    context=context,
                    transport_factory=cast("TransportFactory", PinnedTransport(target)),
                    client_properties={"connection_name": self.connection_name},
                )
        except TimeoutError:
            raise SourceUnavailable(f"cannot connect to RabbitMQ at {where} within {timeout:.1f}s") from None
        except amqp_errors.ProbableAuthenticationError:
            raise SourceUnauthenticated(f"RabbitMQ at {where} refused the credentials of {target.login}") from None
        except amqp_errors.AuthenticationError:
            wanted = "EXTERNAL (rabbitmq_auth_mechanism_ssl)" if target.external else "PLAIN or AMQPLAIN"
            raise SourceUnauthenticated(f"RabbitMQ at {where} does not offer the {wanted} login mechanism") from None
        except amqp_errors.InvalidFrameError:
            # The broker answers connection.open with a close: the vhost is missing or not allowed (aiormq
            # drops the broker's reason text, so say both).
            raise SourceNotFound(
                f"RabbitMQ at {where} refused vhost '{target.vhost}' for {target.login}: "
                "the vhost does not exist or the user has no permissions on it"
            ) from None
        except amqp_errors.ConnectionClosed as exc:
            raise _closed_error(exc, target) from None
        except ssl.SSLError as exc:
            raise SourceUnavailable(
                f"TLS with RabbitMQ at {where} failed: {exc.reason or type(exc).__name__}"
            ) from None
        except (amqp_errors.AMQPError, OSError) as exc:
            raise SourceUnavailable(f"cannot reach RabbitMQ at {where}: {_reason(exc)}") from None
        log.info("opened an AMQP connection to %s vhost '%s'", where, target.vhost)
        return AmqpClient(connection)

    @staticmethod
    async def _hang_up(client: AmqpClient) -> None:
        await client.close()

    def forget_idle_targets(self) -> None:
        """Drop dial settings and backoff of targets with no pooled connection and no pending retry."""
        now = time.monotonic()
        for target in [t for t in self._connect_timeout if t not in self.pool]:
            backoff = self._backoff.get(target)
            if backoff is None or backoff.retry_at < now:
                self._connect_timeout.pop(target, None)
                self._backoff.pop(target, None)


def _closed_error(exc: amqp_errors.ConnectionClosed, target: AmqpTarget) -> AdapterError:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = str(exc.args[1]) if len(exc.args) > 1 else ""
    if code == 403:
        return SourcePermissionDenied(f"RabbitMQ at {target.endpoint} refused access: {text}")
    if code == 530:
        return SourceNotFound(f"RabbitMQ at {target.endpoint} refused vhost '{target.vhost}': {text}")
    return SourceUnavailable(f"RabbitMQ at {target.endpoint} closed the connection: {code} {text}".rstrip())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
