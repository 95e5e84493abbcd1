"""amqps:// against a broker of our own that requires TLS with client certificates (made with openssl)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.fixtures._util import free_port, port_open, wait_for
from tests.fixtures.rabbitmq import RabbitBroker, RabbitNode
from tests.fixtures.scaler import ScalerProcess


@dataclass
class TlsBroker:
    broker: RabbitBroker
    port: int
    certs: Path
    queue: str

    def host(self) -> str:
        return f"amqps://guest:guest@localhost:{self.port}/%2F"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> None:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=scaler-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-out", f"{name}.crt", *ext, cwd=directory)  # fmt: skip
    for key in directory.glob("*.key"):
        key.chmod(0o644)  # the broker may run as another user than the test


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    port = free_port()
    certs: list[Path] = []

    def tls_config(workdir: Path) -> str:
        make_certificates(workdir / "certs")
        certs.append(workdir / "certs")
        return (
            f"listeners.ssl.1 = 127.0.0.1:{port}\n"
            f"ssl_options.cacertfile = {workdir / 'certs' / 'ca.crt'}\n"
            f"ssl_options.certfile = {workdir / 'certs' / 'server.crt'}\n"
            f"ssl_options.keyfile = {workdir / 'certs' / 'server.key'}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )

    node = RabbitNode(tls_config)
    node.start()
    broker = RabbitBroker("127.0.0.1", node.amqp_port, node.management_port, "guest", "guest", node=node)
    try:
        wait_for(lambda: port_open(port), 30, "the TLS listener")
        queue = broker.declare("tls", vhost="/")
        broker.publish(queue, 4, vhost="/")
        broker.close_clients()
        yield TlsBroker(broker, port, certs[0], queue)
    finally:
        broker.close_clients()
        node.stop()


@pytest.fixture(scope="module")
def scaler(tls_broker: TlsBroker) -> Iterator[ScalerProcess]:
    """The module's scaler, letting triggers name the broker's certificate files (trigger_file_dirs)."""
    process = ScalerProcess(
        ["--cache-ttl", "0.2", "--error-cache-ttl", "0.2", "--trigger-file-dirs", str(tls_broker.certs)]
    )
    yield process
    process.stop()


def meta(tls: TlsBroker, **extra: str) -> dict[str, str]:
    return {"adapter": "rabbitmq", "host": tls.host(), "queueName": tls.queue, "mode": "QueueLength", "value": "2",
            **extra}  # fmt: skip


def client_cert(tls: TlsBroker) -> dict[str, str]:
    return {"certFile": str(tls.certs / "client.crt"), "keyFile": str(tls.certs / "client.key")}


def test_amqps_with_ca_and_client_certificate_reads_the_queue(scaler: ScalerProcess, tls_broker: TlsBroker) -> None:
    assert scaler.value(meta(tls_broker, caFile=str(tls_broker.certs / "ca.crt"), **client_cert(tls_broker))) == 4


def test_amqps_without_client_certificate_is_unavailable(scaler: ScalerProcess, tls_broker: TlsBroker) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(meta(tls_broker, caFile=str(tls_broker.certs / "ca.crt")))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_amqps_with_an_untrusted_server_certificate_is_unavailable(
    scaler: ScalerProcess, tls_broker: TlsBroker
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(meta(tls_broker, **client_cert(tls_broker)))  # no caFile: the test CA is unknown
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "TLS" in err.value.details() or "certificate" in err.value.details()


def test_unsafe_ssl_skips_server_verification(scaler: ScalerProcess, tls_broker: TlsBroker) -> None:
    assert scaler.value(meta(tls_broker, unsafeSsl="true", **client_cert(tls_broker))) == 4
