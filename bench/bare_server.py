"""The baseline: a bare grpc.aio server built from the same stubs that answers GetMetrics with a constant.

    bare_server.py ADDRESS [--generic-only]

As generated code registers it by default; `--generic-only` registers the same handlers the way the scaler
does (scaler/wire.py GenericOnly), to show what that registration alone is worth.
"""

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


async def main(address: str, generic_only: bool) -> None:
    server = aio.server()
    if generic_only:
        from scaler.wire import GenericOnly

        pb_grpc.add_ExternalScalerServicer_to_server(Constant(), GenericOnly(server))
    else:
        pb_grpc.add_ExternalScalerServicer_to_server(Constant(), server)
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--generic-only" in sys.argv[2:]))
