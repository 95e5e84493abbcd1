"""The scaler started the way users start it (`python -m scaler serve`), reached over a real gRPC channel.

Plugins' test runs use this: the interpreter running pytest is the one with the plugin installed, so the
server finds the plugin through its entry point exactly as it would in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc

T = TypeVar("T")

# The first health checks race the server's start; default reconnect backoff would add ~1 s to every start.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 200),
]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    suffix = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{suffix}")


def scaled_object_ref(metadata: Mapping[str, str], name: str = "contract", namespace: str = "default") -> Any:
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))


class SilentServer:
    """A loopback TCP server that accepts connections and never answers: a source that is too slow."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)  # hold it open, read nothing, write nothing

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LAUNCH_ATTEMPTS = 3
_PORT_TAKEN = "[Errno 98]"  # EADDRINUSE, as the scaler reports it ("scaler: cannot start: [Errno 98] ...")


class RunningScaler:
    """One `python -m scaler serve` subprocess on free loopback ports, with typed helpers for the RPCs."""

    def __init__(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        # The test run's own SCALER_* variables must not leak into the server under test.
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}
        full_env.update(env or {})
        for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
            self._launch(args, full_env, channel_credentials)
            try:
                wait_for(self._serving, 20, "the scaler to report SERVING")
                return
            except BaseException:
                self.stop(signal.SIGKILL)  # never leave a half-started server behind
                # free_port() only finds a port that was free a moment ago: another process (a broker
                # node a fixture just started, say) can bind it first. Then try again on other ports.
                if attempt == _LAUNCH_ATTEMPTS or _PORT_TAKEN not in self.logs():
                    raise

    def _launch(
        self, args: Sequence[str], env: Mapping[str, str], channel_credentials: grpc.ChannelCredentials | None
    ) -> None:
        host, self.grpc_port = self._grpc_listen()
        self.http_port = free_port()
        self.address = f"{host}:{self.grpc_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="scaler-contract-"))
        self.log_path = self.workdir / "scaler.log"
        command = [
            sys.executable,
            "-m",
            "scaler",
            "serve",
            "--grpc-address",
            self.address,
            "--http-address",
            f"127.0.0.1:{self.http_port}",
            *args,
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        # With TLS on, the caller passes the credentials a KEDA-like client would use.
        self.channel = (
            grpc.secure_channel(self.address, channel_credentials, options=FAST_RECONNECT)
            if channel_credentials is not None
            else grpc.insecure_channel(self.address, options=FAST_RECONNECT)
        )
        self.stub = pb_grpc.ExternalScalerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._final_logs: str | None = None

    def _grpc_listen(self) -> tuple[str, int]:
        """Where the gRPC port listens: a subclass may put replicas on other loopback addresses."""
        return "127.0.0.1", free_port()

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"scaler exited with {self.proc.returncode}: {self.logs()[-3000:]}")
        try:
            response = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def logs(self) -> str:
        """Everything the server logged (still readable after stop())."""
        if self._final_logs is not None:
            return self._final_logs
        return self.log_path.read_text(errors="replace")

    # `name` and `namespace` are the ScaledObject's, as KEDA would send them.

    def spec(
        self, metadata: Mapping[str, str], timeout: float = 10, *, name: str = "contract", namespace: str = "default"
    ) -> Any:
        return self.stub.GetMetricSpec(scaled_object_ref(metadata, name, namespace), timeout=timeout)

    def metrics(
        self,
        metadata: Mapping[str, str],
        metric_name: str = "",
        timeout: float = 30,
        *,
        name: str = "contract",
        namespace: str = "default",
    ) -> Any:
        request = pb.GetMetricsRequest(
            scaledObjectRef=scaled_object_ref(metadata, name, namespace), metricName=metric_name
        )
        return self.stub.GetMetrics(request, timeout=timeout)

    def value(self, metadata: Mapping[str, str], *, name: str = "contract", namespace: str = "default") -> float:
        """GetMetricSpec, then GetMetrics under the name it returned, as KEDA does."""
        metric = self.spec(metadata, name=name, namespace=namespace).metricSpecs[0].metricName
        response = self.metrics(metadata, metric, name=name, namespace=namespace)
        return float(response.metricValues[0].metricValueFloat)

    def is_active(
        self, metadata: Mapping[str, str], timeout: float = 30, *, name: str = "contract", namespace: str = "default"
    ) -> bool:
        request = scaled_object_ref(metadata, name, namespace)
        return bool(self.stub.IsActive(request, timeout=timeout).result)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.channel.close()
        self._log.close()
        if self._final_logs is None:
            self._final_logs = self.logs()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return int(self.proc.returncode)
