"""A KEDA external scaler: the engine (gRPC service, measurement cache, push streams, config, metrics, CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keda-queue-scaler")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
