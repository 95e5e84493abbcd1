"""Test kit for adapter authors: the adapter contract suite and a real scaler subprocess to test through.

    from scaler.testing import AdapterContract, ContractSource, SourceFactory

Needs pytest (install `keda-queue-scaler[testing]`); docs/ADAPTERS.md says how to use it.
"""

from ._contract import AdapterContract, ContractSource, SourceFactory
from ._process import RunningScaler, SilentServer, free_port, scaled_object_ref, wait_for

__all__ = [
    "AdapterContract",
    "ContractSource",
    "RunningScaler",
    "SilentServer",
    "SourceFactory",
    "free_port",
    "scaled_object_ref",
    "wait_for",
]
