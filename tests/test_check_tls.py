"""`scaler check` to a scaler serving mutual TLS (--ca-cert / --cert / --key), and to a misbehaving scaler."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures._util import free_port, port_open, stop_group, wait_for
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import ROOT
from tests.test_check import prometheus_trigger, run_cli, scaled_object, write
from tests.test_watch import CLEAN_ENV


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "1", *extra, cwd=d)  # fmt: skip
    return d


@pytest.fixture
def tls_scaler(pki: Path, tmp_path: Path) -> Iterator[str]:
    """The scaler serving mutual TLS. Started here: the scaler fixture's health probe speaks plaintext."""
    port = free_port()
    log = open(tmp_path / "scaler.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaler", "serve", "--grpc-address", f"127.0.0.1:{port}",
         "--http-address", f"127.0.0.1:{free_port()}", "--tls-cert-file", str(pki / "server.crt"),
         "--tls-key-file", str(pki / "server.key"), "--tls-client-ca-file", str(pki / "ca.crt")],
        cwd=ROOT, env=CLEAN_ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), 20, "the TLS scaler to listen")
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc)
        log.close()


def test_mutual_tls_flags_reach_a_scaler_that_requires_client_certificates(
    tmp_path: Path, tls_scaler: str, pki: Path, prometheus: PrometheusServer
) -> None:
    path = write(tmp_path, scaled_object("tls", [prometheus_trigger(prometheus, "vector(12)", "5", name="tls")]))
    flags = ["--address", tls_scaler, "-o", "json"]
    ok = run_cli("check", path, *flags, "--ca-cert", str(pki / "ca.crt"),
                 "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"))  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["resources"][0]["triggers"][0]["metrics"][0]["reading"] == 12
    refused = run_cli("check", path, *flags, "--ca-cert", str(pki / "ca.crt"))  # no client certificate
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["resources"][0]["triggers"][0]["error"]["code"] == "UNAVAILABLE"


def test_unreadable_tls_file_is_bad_input(tmp_path: Path, prometheus: PrometheusServer) -> None:
    path = write(tmp_path, scaled_object("tls", [prometheus_trigger(prometheus, "vector(1)", "5", name="tls")]))
    result = run_cli("check", path, "--address", "127.0.0.1:1", "--ca-cert", str(tmp_path / "missing.crt"))
    assert (result.returncode, result.stderr) == (
        2,
        f"scaler: --ca-cert {tmp_path / 'missing.crt'}: No such file or directory\n",
    )


class ZeroTargetScaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    """A third-party scaler that breaks the contract: a target of 0."""

    def GetMetricSpec(self, request: Any, context: Any) -> Any:
        return pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(metricName="broken", targetSizeFloat=0)])


@pytest.fixture
def zero_target_scaler() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ExternalScalerServicer_to_server(ZeroTargetScaler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_a_zero_target_from_another_scaler_is_reported_not_divided_by(tmp_path: Path, zero_target_scaler: str) -> None:
    trigger = {"type": "external", "name": "odd", "metadata": {"scalerAddress": zero_target_scaler}}
    result = run_cli("check", write(tmp_path, scaled_object("odd", [trigger])))
    assert result.returncode == 1
    assert "error BAD_METRIC_SPEC: GetMetricSpec returned target 0.0 for broken" in result.stdout
    assert "Traceback" not in result.stderr
