"""gRPC TLS and mutual TLS as KEDA dials them (caCert, tlsClientCert, tlsClientKey), and certificate rotation."""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures._certs import CertificateAuthority, Issued
from tests.fixtures._util import wait_for
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ScalerProcess, StartScaler, ref

SPEC_ONLY = {"adapter": "prometheus", "serverAddress": "http://127.0.0.1:9", "query": "up", "threshold": "1"}


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority
    server: Issued
    client: Issued
    rogue_client: Issued  # signed by a CA the scaler does not trust

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def server_flags(self, *, mutual: bool) -> dict[str, str]:
        flags = {"tls_cert_file": str(self.dir / "server.crt"), "tls_key_file": str(self.dir / "server.key")}
        if mutual:
            flags["tls_client_ca_file"] = str(self.ca_file)
        return flags

    def keda_credentials(self, client: Issued | None) -> grpc.ChannelCredentials:
        """What KEDA builds from caCert (+ tlsClientCert / tlsClientKey for mutual TLS)."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.cert_pem)
        return grpc.ssl_channel_credentials(self.ca.cert_pem, client.key_pem, client.cert_pem)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertificateAuthority()
    server = ca.issue("scaler-original", server=True)
    server.write(tmp_path, "server")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    client = ca.issue("keda-operator", server=False)
    client.write(tmp_path, "client")
    rogue = CertificateAuthority("rogue-ca").issue("keda-operator", server=False)
    return Pki(tmp_path, ca, server, client, rogue)


def call_spec(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    # A local subchannel pool: a fresh connection (and handshake), never one shared with another channel.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channel = (
        grpc.secure_channel(address, credentials, options)
        if credentials is not None
        else grpc.insecure_channel(address, options)
    )
    with channel:
        try:
            pb_grpc.ExternalScalerStub(channel).GetMetricSpec(ref(SPEC_ONLY), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_keda_client_with_a_trusted_certificate_is_served_over_mutual_tls(start_scaler: StartScaler, pki: Pki) -> None:
    scaler = start_scaler(channel_credentials=pki.keda_credentials(pki.client), **pki.server_flags(mutual=True))
    assert scaler.spec(SPEC_ONLY).metricSpecs[0].targetSizeFloat == 1
    assert call_spec(scaler.address, pki.keda_credentials(pki.client)) == grpc.StatusCode.OK
    assert "mTLS" in scaler.logs()


@pytest.mark.parametrize("client", ["no certificate", "untrusted certificate", "plaintext"])
def test_client_without_a_trusted_certificate_is_refused(start_scaler: StartScaler, pki: Pki, client: str) -> None:
    scaler = start_scaler(channel_credentials=pki.keda_credentials(pki.client), **pki.server_flags(mutual=True))
    credentials = {
        "no certificate": pki.keda_credentials(None),
        "untrusted certificate": pki.keda_credentials(pki.rogue_client),
        "plaintext": None,
    }[client]
    assert call_spec(scaler.address, credentials) == grpc.StatusCode.UNAVAILABLE
    # The refusal is the handshake's: the server is fine and keeps serving trusted clients.
    assert call_spec(scaler.address, pki.keda_credentials(pki.client)) == grpc.StatusCode.OK


def test_tls_without_a_client_ca_serves_clients_without_certificates_and_refuses_plaintext(
    start_scaler: StartScaler, pki: Pki
) -> None:
    scaler = start_scaler(channel_credentials=pki.keda_credentials(None), **pki.server_flags(mutual=False))
    assert call_spec(scaler.address, pki.keda_credentials(None)) == grpc.StatusCode.OK
    assert call_spec(scaler.address, None) == grpc.StatusCode.UNAVAILABLE


def served_certificate(port: int, pki: Pki) -> x509.Certificate:
    """The certificate a new connection gets, from a TLS handshake like gRPC's (ALPN h2, client cert)."""
    context = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
    context.load_cert_chain(pki.dir / "client.crt", pki.dir / "client.key")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def replace_file(path: Path, content: bytes) -> None:
    # Like a Secret volume update: the new file appears whole (rename), never half-written.
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def test_rotated_server_certificate_reaches_new_connections_while_open_streams_keep_going(
    start_scaler: StartScaler, pki: Pki, scraped: PrometheusServer, exporter: Exporter
) -> None:
    scaler = start_scaler(
        channel_credentials=pki.keda_credentials(pki.client),
        push_interval=0.3,
        cache_ttl=0.2,
        **pki.server_flags(mutual=True),
    )
    assert served_certificate(scaler.grpc_port, pki).serial_number == pki.server.serial
    series = unique_metric("tls_rotation")
    exporter.set(series, 0)
    scraped.wait_for_value(series, 0)
    stream = scaler.stream_is_active(
        {"adapter": "prometheus", "serverAddress": scraped.url, "query": series, "threshold": "1"}
    )
    assert stream.next().result is False

    rotated = pki.ca.issue("scaler-rotated", server=True)
    replace_file(pki.dir / "server.key", rotated.key_pem)
    replace_file(pki.dir / "server.crt", rotated.cert_pem)

    fresh = served_certificate(scaler.grpc_port, pki)
    assert (fresh.serial_number, common_name(fresh)) == (rotated.serial, "scaler-rotated")
    assert call_spec(scaler.address, pki.keda_credentials(pki.client)) == grpc.StatusCode.OK
    # The stream opened before the rotation is still live: it reports the next flip.
    exporter.set(series, 5)
    assert stream.next(timeout=15).result is True
    assert not stream.ended.is_set()
    assert scaler.proc.poll() is None
    stream.cancel()
    assert "TLS certificate files changed" in scaler.logs()


def test_half_done_rotation_keeps_the_previous_certificate_until_the_pair_matches(
    start_scaler: StartScaler, pki: Pki
) -> None:
    scaler: ScalerProcess = start_scaler(
        channel_credentials=pki.keda_credentials(pki.client), **pki.server_flags(mutual=True)
    )
    rotated = pki.ca.issue("scaler-rotated", server=True)
    replace_file(pki.dir / "server.crt", rotated.cert_pem)  # the key is not there yet: pair does not match
    assert served_certificate(scaler.grpc_port, pki).serial_number == pki.server.serial
    assert call_spec(scaler.address, pki.keda_credentials(pki.client)) == grpc.StatusCode.OK
    replace_file(pki.dir / "server.key", rotated.key_pem)
    assert wait_for(
        lambda: served_certificate(scaler.grpc_port, pki).serial_number == rotated.serial, 5, "the rotated certificate"
    )
    assert "cannot be used yet" in scaler.logs()
