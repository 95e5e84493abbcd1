"""Assemble and run the server: gRPC (scaler, health, reflection), HTTP endpoints, and the janitor."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from adapters.api import AdapterContext, AdapterRegistry, HttpClients
from adapters.auth.params import set_cloud_hosts

from ._generated import externalscaler_pb2 as pb
from .cache import MeasurementCache
from .egress import EgressPolicy
from .http import HttpEndpoints
from .metrics import ScalerMetrics
from .push import PushHub
from .service import ExternalScalerService
from .settings import Settings
from .status import NoStatus, StatusBoard
from .status_page import StatusPage
from .tls import RotatingServerCredentials
from .triggers import TriggerParser
from .wire import GenericOnly, add_external_scaler

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """GOAWAY after `max_connection_age`: KEDA's grpc-go client re-resolves the headless Service only when a
    connection ends, so without it a replica added later gets no calls from a connected KEDA.

    The grace covers what is in flight at GOAWAY: a unary call waits on its source for at most
    max_source_timeout, and a push stream ends itself with OK within one age of opening (see
    ExternalScalerService), so the grace is both added up: gRPC never cuts a stream, and KEDA keeps its
    2 s reconnect backoff instead of doubling it.
    """
    age = settings.max_connection_age
    if not age:
        return []
    grace = age + settings.max_source_timeout
    return [
        ("grpc.max_connection_age_ms", round(age * 1000)),
        ("grpc.max_connection_age_grace_ms", round(grace * 1000)),
    ]


class ScalerServer:
    def __init__(self, settings: Settings, registry: AdapterRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = ScalerMetrics(settings.series_ttl)
        # Before any metadata is parsed: which hosts besides the clouds' own may receive cloud credentials.
        set_cloud_hosts(settings.auth_cloud_hosts)
        egress = EgressPolicy(
            settings.egress_allow,
            allow_inline=settings.allow_inline_addresses,
            resolve_timeout=settings.egress_resolve_timeout,
            nameservers=settings.egress_nameservers,
        )
        # Every client resolves through the egress policy's hook: connections go to approved addresses only.
        self.registry = registry or AdapterRegistry(
            AdapterContext(
                http=HttpClients(egress.connect_addresses),
                default_timeout=settings.source_timeout,
                resolve=egress.connect_addresses,
            )
        )
        self.cache = MeasurementCache(
            settings.cache_ttl,
            settings.error_cache_ttl,
            self.metrics,
            max_timeout=settings.max_source_timeout,
            queries_per_namespace=settings.max_source_queries_per_namespace,
        )
        self.hub = PushHub(self.cache, settings.push_interval, self.metrics, settings.max_pollers_per_namespace)
        self.parser = TriggerParser(
            self.registry,
            settings.resolved_connections(),
            settings.source_timeout,
            settings.metadata_cache_size,
            egress,
            max_metadata_bytes=settings.max_metadata_bytes,
            cache_bytes=settings.metadata_cache_bytes,
            ambient_namespaces=settings.ambient_credentials_namespaces,
            file_dirs=settings.trigger_file_dirs,
        )
        self.status = StatusBoard(settings.series_ttl, settings.status_max_rows) if settings.status_page else NoStatus()
        self.shutdown = asyncio.Event()
        self.ready = False
        self.health = health.aio.HealthServicer()
        self.http = HttpEndpoints(
            self.metrics.registry,
            lambda: self.ready,
            StatusPage(self.status, self.metrics) if settings.status_page else None,
        )
        self.grpc: aio.Server | None = None
        self.tls: RotatingServerCredentials | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._janitor: asyncio.Task[None] | None = None
        for name, pool in self.registry.pools().items():
            self.metrics.pooled_clients.labels(name).set_function(pool.__len__)

    async def start(self) -> None:
        server = aio.server(
            options=[
                ("grpc.max_receive_message_length", 1024 * 1024),
                # gRPC core cancels calls at random once more than 1,000 wait to be picked up by the event
                # loop (3,000: all). KEDA reconciling 10,000 ScaledObjects and reopening 2,000 streams at once
                # queues more than that, and the cancelled ones cost KEDA a retry or a fallback.
                # Still bounded, so a sustained overload sheds calls instead of growing memory without end.
                ("grpc.server.max_pending_requests", 10_000),
                ("grpc.server.max_pending_requests_hard_limit", 20_000),
                *connection_age_options(self.settings),
            ]
        )
        service = ExternalScalerService(
            self.parser,
            self.cache,
            self.hub,
            self.metrics,
            self.shutdown,
            status=self.status,
            stream_age=self.settings.max_connection_age or None,
        )
        add_external_scaler(service, server, self.metrics)
        # Generic handlers only, for every service on the server (see GenericOnly for the measured reason).
        health_pb2_grpc.add_HealthServicer_to_server(self.health, GenericOnly(server))
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            ),
            GenericOnly(server),
        )
        s = self.settings
        self.grpc = server  # from here on, stop() tears it down, also when a port cannot be bound
        try:
            if s.tls_cert_file or s.tls_key_file:
                self.tls = RotatingServerCredentials(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
                self.grpc_port = server.add_secure_port(s.grpc_address, self.tls.credentials())
            else:
                self.grpc_port = server.add_insecure_port(s.grpc_address)
        except RuntimeError:
            # gRPC says only "Failed to bind to address": report it like the HTTP port's bind error.
            raise OSError(
                errno.EADDRINUSE, f"cannot listen for gRPC on {s.grpc_address} (in use, or not this host's address)"
            ) from None
        await server.start()
        loop = asyncio.get_running_loop()
        # Counted at scrape time only: a leak of tasks (e.g. per failed poll) shows up on /metrics.
        self.metrics.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.http_port = await self.http.start(*split_address(s.http_address))
        self.ready = True
        self._janitor = asyncio.create_task(self._sweep_forever(), name="janitor")
        log.info(
            "serving gRPC on port %d (%s), HTTP on port %d; adapters: %s",
            self.grpc_port,
            "mTLS" if s.tls_client_ca_file else "TLS" if self.tls else "plaintext",
            self.http_port,
            ", ".join(self.registry.names()),
        )

    async def _sweep_forever(self) -> None:
        # Forget what nobody asks for any more: cache entries, per-ScaledObject series, idle clients.
        period = max(0.5, min(self.settings.series_ttl, self.settings.idle_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            await self.sweep()

    async def sweep(self) -> None:
        self.cache.evict_idle(self.settings.idle_timeout)
        self.metrics.objects.sweep()
        self.status.sweep()
        closed = await self.registry.close_idle(self.settings.idle_timeout)
        if closed:
            log.info("closed %d idle source connection(s)", closed)

    async def stop(self) -> None:
        """Graceful: not ready at once, streams end with OK, in-flight unary calls finish, clients close."""
        if not self.ready and self.grpc is None:
            return
        self.ready = False
        await self.health.enter_graceful_shutdown()
        self.shutdown.set()
        await self.hub.close()
        if self.grpc is not None:
            await self.grpc.stop(self.settings.shutdown_grace)
            self.grpc = None
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.registry.close()
        await self.http.close()
        log.info("stopped")


async def serve(settings: Settings) -> int:
    server = ScalerServer(settings)
    try:
        await server.start()
    except BaseException:
        # A half-started server (gRPC up, HTTP port taken) is stopped here, inside the event loop: left to
        # the garbage collector, grpc schedules its shutdown on a closed loop and prints a traceback.
        await server.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received; shutting down (grace %.0fs)", settings.shutdown_grace)
    await server.stop()
    return 0
