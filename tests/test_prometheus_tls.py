"""The Prometheus adapter over TLS, against a real Prometheus serving HTTPS (and one requiring client certs)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.fixtures.certs import Pki
from tests.fixtures.prometheus import Exporter, PrometheusServer, start_prometheus
from tests.fixtures.scaler import ScalerProcess


def _https(server: PrometheusServer) -> str:
    return server.url.replace("http://", "https://")


@pytest.fixture(scope="module")
def tls_prometheus(pki: Pki) -> Iterator[PrometheusServer]:
    crt, key = pki.issue("prometheus", server=True)
    exporter = Exporter()
    server = start_prometheus(
        exporter,
        web_config=f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n",
        ready_scheme="https",
    )
    yield server
    server.stop()
    exporter.close()


@pytest.fixture(scope="module")
def scaler(pki: Pki) -> Iterator[ScalerProcess]:
    """The module's scaler, letting triggers name the test PKI's files (trigger_file_dirs)."""
    process = ScalerProcess(["--cache-ttl", "0.2", "--error-cache-ttl", "0.2", "--trigger-file-dirs", str(pki.root)])
    yield process
    process.stop()


def meta(server: PrometheusServer, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": _https(server), "query": "vector(9)", "threshold": "1", **extra}


def test_untrusted_server_certificate_is_unavailable_naming_tls(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(tls_prometheus))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in err.value.details() or "certificate" in err.value.details().lower()


def test_client_certificate_and_private_ca_read_the_value(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    crt, key = pki.issue("keda-client", server=False)
    metadata = meta(tls_prometheus, caFile=str(pki.ca), certFile=str(crt), keyFile=str(key), authModes="tls")
    assert scaler.value(metadata) == 9


def test_unsafe_ssl_skips_verification_but_still_presents_the_client_cert(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    crt, key = pki.issue("keda-client-2", server=False)
    assert scaler.value(meta(tls_prometheus, unsafeSsl="true", certFile=str(crt), keyFile=str(key))) == 9


def test_without_a_client_certificate_the_server_refuses(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(tls_prometheus, caFile=str(pki.ca)))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The server certificate verified (private CA); the handshake failed on the missing client certificate.
    assert "CERTIFICATE_VERIFY_FAILED" not in err.value.details()


def test_triggers_differing_only_in_tls_settings_do_not_share_a_reading(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    crt, key = pki.issue("keda-client-3", server=False)
    with pytest.raises(grpc.RpcError):
        scaler.metrics(meta(tls_prometheus, certFile=str(crt), keyFile=str(key)))  # untrusted server cert
    # Immediately after, within the error cache TTL: the same query with the CA must not get that cached error.
    assert scaler.value(meta(tls_prometheus, certFile=str(crt), keyFile=str(key), caFile=str(pki.ca))) == 9


def test_cert_without_key_is_invalid_argument(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec(meta(tls_prometheus, certFile=str(pki.root / "only-cert.pem")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "certFile" in err.value.details()


def test_pem_contents_in_ca_cert_and_key_read_the_value_as_in_keda(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    crt, key = pki.issue("keda-client-pem", server=False)
    pem = {"ca": pki.ca.read_text(), "cert": crt.read_text(), "key": key.read_text(), "authModes": "tls"}
    assert scaler.value(meta(tls_prometheus, **pem)) == 9
    # Without `tls` in authModes the certificate is not sent (KEDA): the server requires one.
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(
            meta(tls_prometheus, ca=pem["ca"], cert=pem["cert"], key=pem["key"], authModes="basic", username="u")
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_pem_contents_that_are_not_a_key_are_refused_naming_the_key_without_echoing_it(
    scaler: ScalerProcess, tls_prometheus: PrometheusServer, pki: Pki
) -> None:
    crt, _ = pki.issue("keda-client-bad", server=False)
    bad_key = "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(meta(tls_prometheus, ca=pki.ca.read_text(), cert=crt.read_text(), key=bad_key, authModes="tls"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'cert'" in err.value.details() and "bm90LWEta2V5" not in err.value.details()
