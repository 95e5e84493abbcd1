"""Call a scaler the way KEDA does: GetMetricSpec, then GetMetrics with the returned names, then IsActive.

Also runs the engine in-process for `--local`, so local and server modes share one code path: the same
client talks to a ScalerServer bound to a free loopback port inside this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from adapters.api import redact

from .._generated import externalscaler_pb2 as pb
from .._generated import externalscaler_pb2_grpc as pb_grpc
from .manifests import ScaledResource, TriggerSpec

# KEDA dials every scaler address with round-robin, so a headless Service spreads calls over pods.
_CHANNEL_OPTIONS = [("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))]


@dataclass(frozen=True)
class MetricReading:
    name: str
    reading: float
    target: float


@dataclass
class TriggerResult:
    trigger: TriggerSpec
    metrics: list[MetricReading] = field(default_factory=list)
    active: bool | None = None
    error_code: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_code


@dataclass(frozen=True)
class TlsFiles:
    """PEM contents for the channel to the scaler (what KEDA takes from caCert / tlsClientCert / tlsClientKey)."""

    ca_cert: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def read(cls, ca_cert: str, cert: str, key: str) -> TlsFiles:
        """Raises OSError naming the file that cannot be read, before any call is made."""

        def load(flag: str, path: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise OSError(f"{flag} {path}: {exc.strerror}") from None

        return cls(load("--ca-cert", ca_cert), load("--cert", cert), load("--key", key))

    @property
    def given(self) -> bool:
        return bool(self.ca_cert or self.cert or self.key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_cert, self.key, self.cert)


def ref(resource: ScaledResource, trigger: TriggerSpec) -> Any:
    return pb.ScaledObjectRef(name=resource.name, namespace=resource.namespace, scalerMetadata=dict(trigger.metadata))


def _float(value_float: float, value_int: int) -> float:
    # KEDA uses the float field when it is positive, else the deprecated int one.
    return float(value_float) if value_float > 0 else float(value_int)


class ScalerClient:
    """One channel per (address, TLS on/off), shared by every trigger, like KEDA's connection cache."""

    def __init__(self, *, address: str = "", tls: TlsFiles | None = None, timeout: float = 10.0) -> None:
        self.address = address
        self.tls = tls or TlsFiles()
        self.timeout = timeout
        self._channels: dict[tuple[str, bool], aio.Channel] = {}

    def address_for(self, trigger: TriggerSpec) -> str:
        return self.address or trigger.metadata.get("scalerAddress", "")

    def stub(self, trigger: TriggerSpec) -> pb_grpc.ExternalScalerStub:
        address = self.address_for(trigger)
        secure = self.tls.given or trigger.metadata.get("enableTLS", "").lower() == "true"
        channel = self._channels.get((address, secure))
        if channel is None:
            if secure:
                channel = aio.secure_channel(address, self.tls.credentials(), options=_CHANNEL_OPTIONS)
            else:
                channel = aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels[(address, secure)] = channel
        return pb_grpc.ExternalScalerStub(channel)

    async def spec(self, resource: ScaledResource, trigger: TriggerSpec) -> list[tuple[str, float]]:
        response = await self.stub(trigger).GetMetricSpec(ref(resource, trigger), timeout=self.timeout)
        return [(s.metricName, _float(s.targetSizeFloat, s.targetSize)) for s in response.metricSpecs]

    async def read(
        self, resource: ScaledResource, trigger: TriggerSpec, specs: list[tuple[str, float]]
    ) -> TriggerResult:
        """One KEDA poll: GetMetrics for every spec name, then IsActive; a failure is recorded, not raised."""
        result = TriggerResult(trigger)
        problem = spec_problem(specs)
        if problem:
            result.error_code, result.error_message = "BAD_METRIC_SPEC", problem
            return result
        stub = self.stub(trigger)
        try:
            for name, target in specs:
                request = pb.GetMetricsRequest(scaledObjectRef=ref(resource, trigger), metricName=name)
                response = await stub.GetMetrics(request, timeout=self.timeout)
                for value in response.metricValues:
                    result.metrics.append(
                        MetricReading(name, _float(value.metricValueFloat, value.metricValue), target)
                    )
            if not result.metrics:
                result.error_code, result.error_message = "NO_METRIC_VALUE", "GetMetrics returned no value"
                return result
            result.active = bool((await stub.IsActive(ref(resource, trigger), timeout=self.timeout)).result)
        except aio.AioRpcError as error:
            record_error(result, error)
        return result

    async def check(self, resource: ScaledResource, trigger: TriggerSpec) -> TriggerResult:
        try:
            specs = await self.spec(resource, trigger)
        except aio.AioRpcError as error:
            return record_error(TriggerResult(trigger), error)
        return await self.read(resource, trigger, specs)

    def stream_is_active(self, resource: ScaledResource, trigger: TriggerSpec) -> Any:
        return self.stub(trigger).StreamIsActive(ref(resource, trigger))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def spec_problem(specs: list[tuple[str, float]]) -> str:
    """Why the HPA could not use these metric specs ('' when it can)."""
    if not specs:
        return "GetMetricSpec returned no metric"
    for name, target in specs:
        if not target > 0:
            return f"GetMetricSpec returned target {target} for {name}: the HPA needs a positive target"
    return ""


def record_error(result: TriggerResult, error: aio.AioRpcError) -> TriggerResult:
    result.metrics.clear()
    result.active = None
    result.error_code = error.code().name
    result.error_message = redact(error.details() or "")
    return result


@contextlib.asynccontextmanager
async def local_scaler(config: str = "") -> AsyncIterator[str]:
    """The engine on a free loopback port in this process (settings from SCALER_* / --config as `serve`)."""
    from ..logs import configure_logging
    from ..server import ScalerServer
    from ..settings import load_settings

    settings = load_settings(
        {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0", "shutdown_grace": 1, "config": config or None}
    )
    configure_logging("WARNING", "text")
    # Per-call source errors are in the table already; repeated on stderr they would garble `watch`.
    logging.getLogger("scaler.service").setLevel(logging.ERROR)
    server = ScalerServer(settings)
    await server.start()
    try:
        yield f"127.0.0.1:{server.grpc_port}"
    finally:
        await server.stop()
