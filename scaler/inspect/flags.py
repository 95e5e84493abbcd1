"""The flags of `scaler check` and `scaler watch`, apart from what they run: building the command line for
`scaler serve` must not import the inspection side (jsonschema, the gRPC client), which the server never uses.
"""

from __future__ import annotations

import argparse

__all__ = ["add_probe_flags"]


def add_probe_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `check` and `watch`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", default="", help="scaler host:port for every trigger (default: its scalerAddress)")
    where.add_argument("--local", action="store_true", help="run the adapters in this process; no server needed")
    parser.add_argument(
        "--current-replicas",
        type=int,
        default=None,
        metavar="N",
        help="replicas running now (default: minReplicaCount)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per gRPC call (default 10)")
    parser.add_argument("--config", default="", help="with --local: the server's YAML settings (named connections)")
    parser.add_argument("--ca-cert", default="", help="CA to verify the scaler's TLS certificate")
    parser.add_argument("--cert", default="", help="client certificate, for a scaler that requires mTLS")
    parser.add_argument("--key", default="", help="client private key, with --cert")
    parser.add_argument(
        "--crds",
        default=None,
        metavar="DIR",
        help="KEDA's CRD manifests to validate against (default: $SCALER_KEDA_CRDS, else the cluster's CRDs "
        "through kubectl, else a built-in subset)",
    )
