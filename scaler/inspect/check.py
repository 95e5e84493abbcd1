"""`scaler check FILE...`: ask the scaler about every external trigger as KEDA would, and say what would scale.

Exit codes: 0 every external trigger was read, 1 at least one failed (its gRPC status is printed),
2 the input is not a usable ScaledObject / ScaledJob.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Sequence

from adapters.api import redact

from ..settings import SettingsError
from .crd import CrdError, Schemas, load_schemas
from .manifests import ManifestError, ScaledResource, read_manifests
from .probe import ScalerClient, TlsFiles, TriggerResult, local_scaler
from .report import Report, evaluate, render_table, to_json

EXIT_OK, EXIT_TRIGGER_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def load(args: argparse.Namespace) -> tuple[list[ScaledResource], Schemas] | None:
    """The manifests and the schemas they passed, or None after printing why they cannot be used."""
    if args.current_replicas is not None and args.current_replicas < 0:
        print("scaler: --current-replicas must be 0 or more", file=sys.stderr)
        return None
    try:
        schemas = load_schemas(args.crds)
        return read_manifests(args.files, need_address=not (args.address or args.local), schemas=schemas), schemas
    except (ManifestError, CrdError) as exc:
        print(f"scaler: {redact(str(exc))}", file=sys.stderr)
        return None


@contextlib.asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[ScalerClient]:
    """A client to --address / each scalerAddress, or to an in-process engine with --local."""
    async with contextlib.AsyncExitStack() as stack:
        address = args.address
        tls = TlsFiles.read(args.ca_cert, args.cert, args.key)
        if args.local:
            address = await stack.enter_async_context(local_scaler(args.config))
            tls = TlsFiles()
        client = ScalerClient(address=address, tls=tls, timeout=args.timeout)
        stack.push_async_callback(client.close)
        yield client


def current_replicas(args: argparse.Namespace, resource: ScaledResource) -> int:
    return resource.bounds.min_replicas if args.current_replicas is None else int(args.current_replicas)


async def check_resource(client: ScalerClient, resource: ScaledResource, current: int) -> Report:
    async def one(index: int) -> TriggerResult:
        trigger = resource.triggers[index]
        return await client.check(resource, trigger) if trigger.external else TriggerResult(trigger)

    results = await asyncio.gather(*(one(i) for i in range(len(resource.triggers))))
    return evaluate(resource, results, current)


async def _check(args: argparse.Namespace, resources: Sequence[ScaledResource]) -> list[Report]:
    async with open_client(args) as client:
        return [await check_resource(client, r, current_replicas(args, r)) for r in resources]


def run(args: argparse.Namespace) -> int:
    loaded = load(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    resources, schemas = loaded
    try:
        reports = asyncio.run(_check(args, resources))
    except (SettingsError, OSError) as exc:  # --local: settings or ports; TLS files
        print(f"scaler: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.output == "json":
        print(
            json.dumps(
                {
                    "ok": not any(r.failed for r in reports),
                    "schemas": schemas.origin,
                    "resources": [to_json(r) for r in reports],
                },
                indent=2,
            )
        )
    else:
        print(f"Manifests checked against {schemas.origin}.\n")
        print("\n\n".join(render_table(r) for r in reports))
    return EXIT_TRIGGER_FAILED if any(r.failed for r in reports) else EXIT_OK
