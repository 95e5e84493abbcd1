"""KEDA's ExternalScaler service: metric spec from metadata alone, readings through the cache, pushes on change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import grpc
from grpc import aio

from adapters.api import AdapterError, redact
from adapters.metadata import INT64_MAX

from ._generated import externalscaler_pb2 as pb
from ._generated import externalscaler_pb2_grpc as pb_grpc
from .cache import MeasurementCache, Reading
from .metrics import ScalerMetrics
from .push import PushHub
from .status import NoStatus, StatusBoard
from .triggers import Trigger, TriggerParser

log = logging.getLogger(__name__)

# Codes a lastKnown reading may stand in for: the source failed, not the trigger or the policy.
_SOURCE_FAILURES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "INTERNAL", "UNAUTHENTICATED"})


# Warm answers are built once: KEDA asks the same few questions over and over, and a cached reading gives
# the same answer until it changes. grpc only serializes the message (read-only), so one instance can
# answer any number of calls at once. Bounded: cleared when full, so new readings cannot grow it.
_ACTIVE = {True: pb.IsActiveResponse(result=True), False: pb.IsActiveResponse(result=False)}
_MAX_BUILT_RESPONSES = 20_000


def _int64(value: float) -> int:
    """A reading as the protocol's int64 `metricValue`, clamped: KEDA uses `metricValueFloat`, which carries
    the reading exactly; unclamped, a reading of 1e30 (`vector(1e30)`) made protobuf raise (INTERNAL)."""
    return max(-INT64_MAX - 1, min(INT64_MAX, round(value)))


def _status(error: AdapterError) -> grpc.StatusCode:
    code: grpc.StatusCode = getattr(grpc.StatusCode, error.status, grpc.StatusCode.INTERNAL)
    return code


def _same_source(trigger: Trigger, reading: Reading) -> float | None:
    """An activation reading is the trigger's reading too when both come from one source."""
    return (
        reading.value if trigger.activation_key is trigger.source_key else None
    )  # `is`: per call, and the parser reuses the key


class ExternalScalerService(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    def __init__(
        self,
        parser: TriggerParser,
        cache: MeasurementCache,
        hub: PushHub,
        metrics: ScalerMetrics,
        shutdown: asyncio.Event,
        *,
        status: StatusBoard | None = None,
        stream_age: float | None = None,
    ) -> None:
        self.parser = parser
        self.cache = cache
        self.hub = hub
        self.metrics = metrics
        self.shutdown = shutdown
        self.status = status if status is not None else NoStatus()  # the status page's observer
        self.stream_age = stream_age
        self._metrics_responses: dict[tuple[str, float], Any] = {}

    # --- helpers -------------------------------------------------------------------------------

    def _trigger(self, ref: Any) -> Trigger:
        try:
            return self.parser.parse(ref.scalerMetadata, ref.namespace)
        except AdapterError as error:
            self.status.failed(ref, None, error)
            raise

    def _spec(self, trigger: Trigger) -> Any:
        return pb.GetMetricSpecResponse(
            metricSpecs=[
                pb.MetricSpec(
                    metricName=trigger.metric_name,
                    targetSize=round(trigger.target),
                    targetSizeFloat=trigger.target,
                )
            ]
        )

    def _metrics_response(self, name: str, value: float) -> Any:
        key = (name, value)
        response = self._metrics_responses.get(key)
        if response is None:
            if len(self._metrics_responses) >= _MAX_BUILT_RESPONSES:
                self._metrics_responses.clear()
            response = self._metrics_responses[key] = pb.GetMetricsResponse(
                metricValues=[pb.MetricValue(metricName=name, metricValue=_int64(value), metricValueFloat=value)]
            )
        return response

    def _read_fresh(self, trigger: Trigger, ref: Any, key: Any) -> tuple[Reading, bool] | None:
        """`_read` from the cache alone, without an await; None when the source has to be asked."""
        try:
            reading = self.cache.fresh(key)
        except AdapterError as error:  # a cached failure
            return self._source_failed(trigger, ref, key, error)
        return None if reading is None else (reading, False)

    async def _read(self, trigger: Trigger, ref: Any, *, activation: bool) -> tuple[Reading, bool]:
        """The reading, and whether it is a stale one served by the lastKnown policy."""
        key = trigger.activation_key if activation else trigger.source_key
        measure = trigger.measure_activation() if activation else trigger.measure()
        try:
            return await self.cache.read(key, measure, trigger.timeout, namespace=ref.namespace), False
        except AdapterError as error:
            return self._source_failed(trigger, ref, key, error)

    def _source_failed(self, trigger: Trigger, ref: Any, key: Any, error: AdapterError) -> tuple[Reading, bool]:
        self.status.failed(ref, trigger, error)
        stale = self._last_known(trigger, ref, key, error)
        if stale is None:
            raise error
        return stale, True

    def _last_known(self, trigger: Trigger, ref: Any, key: Any, error: AdapterError) -> Reading | None:
        """The opt-in `onSourceError: lastKnown` policy: a stale reading, visible in logs and on /metrics."""
        if trigger.on_source_error != "lastKnown" or error.status not in _SOURCE_FAILURES:
            return None
        last = self.cache.last_good(key)
        if last is None or time.monotonic() - last.monotonic > trigger.max_staleness:
            return None
        age = time.monotonic() - last.monotonic
        self.metrics.stale_served.labels(trigger.adapter.name).inc()
        log.warning(
            "serving a %.0fs old reading (onSourceError: lastKnown) because: %s",
            age,
            redact(error.message),
            extra=self._context(ref, trigger),
        )
        return last

    @staticmethod
    def _context(ref: Any, trigger: Trigger | None = None) -> dict[str, Any]:
        context = {"namespace": ref.namespace, "scaledobject": ref.name}
        # Before parsing succeeds, the adapter is whatever the trigger asked for (bounded: it is user input).
        adapter = trigger.adapter.name if trigger is not None else ref.scalerMetadata.get("adapter", "")[:40]
        if adapter:
            context["adapter"] = adapter
        return context

    async def _failed(
        self, method: str, ref: Any, context: aio.ServicerContext, exc: BaseException, started: float
    ) -> NoReturn:
        """How every unary call ends that does not answer: counted, logged, and aborted with its status.

        Called from the RPC's `except BaseException`, so the answering path needs no wrapper coroutine of
        its own (KEDA's calls are thousands a second, and each layer is an object per call).
        """
        code = grpc.StatusCode.INTERNAL
        try:
            if isinstance(exc, AdapterError):
                code = _status(exc)
                await self._abort(context, code, exc, method, ref)
            if isinstance(exc, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
                raise exc
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to answer
                raise exc
            log.error("%s failed unexpectedly", method, exc_info=exc, extra=self._context(ref))
            await context.abort(code, f"{method} failed unexpectedly; see the scaler's log")
        finally:
            self.metrics.count_request(method, code.name, time.perf_counter() - started)
        raise AssertionError("unreachable")  # abort() always raises

    async def _abort(
        self, context: aio.ServicerContext, code: grpc.StatusCode, error: AdapterError, method: str, ref: Any
    ) -> NoReturn:
        message = redact(error.message)
        level = logging.INFO if code == grpc.StatusCode.INVALID_ARGUMENT else logging.WARNING
        log.log(level, "%s: %s", method, message, extra={**self._context(ref), "method": method, "code": code.name})
        await context.abort(code, message)
        raise AssertionError("unreachable")

    # --- RPCs ----------------------------------------------------------------------------------

    # Each unary RPC answers in one coroutine: the warm case (a fresh cached reading) never awaits, and
    # anything raised goes to _failed.

    async def GetMetricSpec(self, request: Any, context: aio.ServicerContext) -> Any:
        # Metadata alone, never the source: KEDA must be able to build the HPA (and apply its
        # fallback) while the source is down (kedacore/keda#8056).
        started = time.perf_counter()
        try:
            response = self._spec(self._trigger(request))
        except BaseException as exc:
            await self._failed("GetMetricSpec", request, context, exc, started)
        self.metrics.count_request("GetMetricSpec", "OK", time.perf_counter() - started)
        return response

    async def GetMetrics(self, request: Any, context: aio.ServicerContext) -> Any:
        started = time.perf_counter()
        ref = request.scaledObjectRef
        try:
            trigger = self._trigger(ref)
            read = self._read_fresh(trigger, ref, trigger.source_key)
            reading, stale = read if read is not None else await self._read(trigger, ref, activation=False)
            name = request.metricName or trigger.metric_name
            # One record per call: value and reading age together.
            self.metrics.objects.record(
                ref.namespace, ref.name, trigger.metric_name, value=reading.value, read_at=reading.taken_at, stale=stale
            )
            self.status.reading(
                ref, trigger, reading.value, reading.taken_at, stale=stale, requested=request.metricName
            )
            response = self._metrics_response(name, reading.value)
        except BaseException as exc:
            await self._failed("GetMetrics", ref, context, exc, started)
        self.metrics.count_request("GetMetrics", "OK", time.perf_counter() - started)
        return response

    async def IsActive(self, request: Any, context: aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            trigger = self._trigger(request)
            read = self._read_fresh(trigger, request, trigger.activation_key)
            reading, stale = read if read is not None else await self._read(trigger, request, activation=True)
            active = reading.value > trigger.activation_target
            self.metrics.objects.record(
                request.namespace,
                request.name,
                trigger.metric_name,
                active=active,
                read_at=reading.taken_at,
                stale=stale,
            )
            self.status.reading(
                request, trigger, _same_source(trigger, reading), reading.taken_at, stale=stale, active=active
            )
        except BaseException as exc:
            await self._failed("IsActive", request, context, exc, started)
        self.metrics.count_request("IsActive", "OK", time.perf_counter() - started)
        return _ACTIVE[active]

    async def _stream_trigger(self, method: str, request: Any, context: aio.ServicerContext) -> Trigger:
        """Parse a stream's trigger, or end the stream with the metadata error (counted like a unary call)."""
        try:
            return self._trigger(request)
        except AdapterError as error:
            await self._refuse_stream(method, request, context, error)

    async def _refuse_stream(
        self, method: str, request: Any, context: aio.ServicerContext, error: AdapterError
    ) -> NoReturn:
        self.metrics.count_request(method, _status(error).name)
        await self._abort(context, _status(error), error, method, request)

    def _stream_end(self) -> float | None:
        """When a push stream opened now ends itself with OK (loop time; None: only at shutdown).

        Within one max_connection_age of opening, so before the GOAWAY grace would cut it (server.py): KEDA
        reopens a cleanly ended stream after 2 s wherever its balancer sends it, which spreads streams
        over replicas added since. Spread over the last tenth of the age: KEDA opens its streams together,
        and ending them together would make every stream reopen in the same second.
        """
        if self.stream_age is None:
            return None
        return asyncio.get_running_loop().time() + self.stream_age * random.uniform(0.9, 1.0)

    @contextlib.contextmanager
    def _open_stream(self, method: str) -> Iterator[None]:
        """Count an open push stream, and its end as OK or CANCELLED."""
        self.metrics.push_streams.labels(method).inc()
        code = "OK"
        try:
            yield
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.metrics.push_streams.labels(method).dec()
            self.metrics.count_request(method, code)

    async def StreamIsActive(self, request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        method = "StreamIsActive"
        trigger = await self._stream_trigger(method, request, context)
        last_sent: bool | None = None
        last_error = ""
        async with contextlib.AsyncExitStack() as watching:
            try:
                updates = await watching.enter_async_context(
                    self.hub.watch(
                        trigger.activation_key,
                        trigger.measure_activation(),
                        trigger.timeout,
                        request.namespace,
                        self._stream_end(),
                    )
                )
            except AdapterError as error:  # the namespace's poller cap
                await self._refuse_stream(method, request, context, error)
            with self._open_stream(method), self.status.streaming(request, trigger):
                async for update in updates:
                    if isinstance(update, AdapterError):
                        self.status.failed(request, trigger, update)
                        # Keep the stream: KEDA's polling reports the error, and we push again once the
                        # source is back. Log each distinct error once, not every interval.
                        if update.message != last_error:
                            last_error = update.message
                            log.warning(
                                "%s: source error, stream kept open: %s",
                                method,
                                redact(update.message),
                                extra=self._context(request, trigger),
                            )
                        continue
                    last_error = ""
                    active = update.value > trigger.activation_target
                    self.metrics.objects.record(
                        request.namespace, request.name, trigger.metric_name, active=active, read_at=update.taken_at
                    )
                    self.status.reading(request, trigger, _same_source(trigger, update), update.taken_at, active=active)
                    # Only transitions: a repeated `true` would refresh KEDA's last-active time forever
                    # and the workload would never scale to zero (kedacore/http-add-on#1792).
                    if active != last_sent:
                        last_sent = active
                        yield _ACTIVE[active]

    async def StreamMetricSpec(self, request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        method = "StreamMetricSpec"
        trigger = await self._stream_trigger(method, request, context)
        with self._open_stream(method):
            # The spec depends on the metadata only, which cannot change within one stream: send it once
            # and hold the stream until KEDA cancels it, the server shuts down or the stream's age is
            # reached (then end with OK).
            until = self._stream_end()
            yield self._spec(trigger)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):  # spans no yield: cannot cancel a write
                    await self.shutdown.wait()
