"""Registers the ExternalScaler service so that a request body that is not a valid message is INVALID_ARGUMENT.

With the generated registration, grpc decodes the body before any of our code runs, and a DecodeError
(corrupt wire format, invalid UTF-8 in a string) becomes UNKNOWN plus a traceback in the log. Here the
decoder returns a marker instead, and the handler refuses it with a status that names the method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from ._generated import externalscaler_pb2 as pb
from .metrics import ScalerMetrics

SERVICE = pb.DESCRIPTOR.services_by_name["ExternalScaler"]


@dataclass(frozen=True)
class Undecodable:
    message_type: str


def _tolerant(parse: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # any decoding failure is the client's bad input, never our crash
            return Undecodable(message_type)

    return decode


def add_external_scaler(service: Any, server: aio.Server, metrics: ScalerMetrics) -> None:
    handlers = {}
    for method in SERVICE.methods:
        request_type = method.input_type.name
        decode = _tolerant(getattr(pb, request_type).FromString, request_type)
        encode = getattr(pb, method.output_type.name).SerializeToString
        implementation = getattr(service, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(method.name, implementation, metrics), request_deserializer=decode, response_serializer=encode
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(method.name, implementation, metrics), request_deserializer=decode, response_serializer=encode
            )
    # Generic only, not also as registered methods as generated code does (see GenericOnly).
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))


class GenericOnly:
    """The server as generated `add_*_to_server` functions see it: their handlers become generic ones only.

    Generated code registers each method twice, as a generic handler and as a "registered method". In
    grpc.aio (1.85) the registered-method path costs more per call than the generic one, and every
    registered method on the server adds to the cost of every call, its own or not. Counted with callgrind
    on a warm GetMetrics under h2load: 472k instructions per call with generic handlers only, 525k with the
    scaler's, health's and reflection's methods registered (bench/grpc_instructions.py; BENCHMARKS.md).
    """

    def __init__(self, server: aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        """Not registered: the generic handler given alongside serves the same methods."""


async def _refuse(method: str, request: Undecodable, context: aio.ServicerContext, metrics: ScalerMetrics) -> None:
    metrics.count_request(method, grpc.StatusCode.INVALID_ARGUMENT.name)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request body is not a valid {request.message_type} message"
    )


def _unary(method: str, implementation: Any, metrics: ScalerMetrics) -> Any:
    async def handle(request: Any, context: aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(method, request, context, metrics)
        return await implementation(request, context)

    return handle


def _stream(method: str, implementation: Any, metrics: ScalerMetrics) -> Any:
    async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _refuse(method, request, context, metrics)
        async for response in implementation(request, context):
            yield response

    return handle
