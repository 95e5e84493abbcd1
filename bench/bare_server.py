"""The baseline: a bare grpc.aio server built from the same stubs that answers GetMetrics with a constant."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from grpc import aio

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc

RESPONSE = pb.GetMetricsResponse(metricValues=[pb.MetricValue(metricName="m", metricValue=4, metricValueFloat=4.0)])


class Constant(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    async def GetMetrics(self, request: Any, context: Any) -> Any:
        return RESPONSE


async def main(address: str) -> None:
    server = aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(Constant(), server)
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
