"""Prometheus authentication end to end: a real scaler, the tests' real Prometheus behind a loopback proxy
that admits only the right credentials (checked independently: the token the stand-in issued, the key,
botocore's SigV4 verdict), and the token services' loopback stand-ins (tests/fixtures/auth_servers.py).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import grpc
import pytest

from tests.fixtures.auth_servers import (
    EntraIdStandIn,
    GoogleTokenEndpoint,
    IssuedCredentials,
    OAuth2TokenEndpoint,
    PrometheusAuthProxy,
    Received,
    StsStandIn,
    verify_sigv4,
)
from tests.fixtures.certs import Pki
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.pubsub import PROJECT, google_isolated_env, service_account_key
from tests.fixtures.scaler import ScalerProcess, StartScaler, error_of

CLIENT_ID, CLIENT_SECRET = "keda-scaler", "s3cret-client-Zq9"
FAST = {"cache_ttl": 0.2, "error_cache_ttl": 0.2, "log_level": "DEBUG"}


def bearer_of(tokens: Callable[[], list[str]]) -> Callable[[Received], str]:
    """Admit a request whose Authorization is `Bearer <t>` for a token the stand-in issued."""

    def admit(received: Received) -> str:
        sent = received.headers.get("authorization", "")
        return "ok" if sent in {f"Bearer {t}" for t in tokens()} else f"not an issued bearer token: {sent[:12]!r}"

    return admit


def trigger(connection: str, value: int, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "connection": connection, "query": f"vector({value})", "threshold": "1", **extra}


def connection_yaml(name: str, metadata: dict[str, str], **sections: dict[str, str]) -> str:
    # JSON is YAML: no quoting surprises with URLs and PromQL.
    return json.dumps({"connections": {name: {"adapter": "prometheus", "metadata": metadata, **sections}}})


def assert_no_secret(scaler: ScalerProcess, *secrets: str) -> None:
    logs, metrics = scaler.logs(), scaler.metrics_text()
    for secret in secrets:
        assert secret not in logs, "a secret reached the DEBUG logs"
        assert secret not in metrics, "a secret reached /metrics"


@pytest.fixture
def idp() -> Iterator[OAuth2TokenEndpoint]:
    server = OAuth2TokenEndpoint(CLIENT_ID, CLIENT_SECRET)
    yield server
    server.close()


def oauth_scaler(start_scaler: StartScaler, idp: OAuth2TokenEndpoint, proxy_url: str, secret: str) -> ScalerProcess:
    metadata = {
        "serverAddress": proxy_url,
        "authModes": "oauth",
        "oauthTokenURI": idp.token_url,
        "clientID": CLIENT_ID,
        "scopes": "metrics.read, metrics.list",
        "endpointParams": "audience=prometheus",
    }
    config = connection_yaml("prom-oauth", metadata, fromEnv={"clientSecret": "PROM_OAUTH_SECRET"})
    return start_scaler(config=config, env={"PROM_OAUTH_SECRET": secret}, **FAST)


def test_fifty_scaled_objects_on_one_oauth_connection_make_one_grant(
    start_scaler: StartScaler, prometheus: PrometheusServer, idp: OAuth2TokenEndpoint
) -> None:
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: idp.issued))
    scaler = oauth_scaler(start_scaler, idp, proxy.url, CLIENT_SECRET)
    with ThreadPoolExecutor(10) as pool:
        values = list(pool.map(lambda i: scaler.value(trigger("prom-oauth", i), name=f"so-{i}"), range(1, 51)))
    assert values == list(range(1, 51))
    [grant] = idp.grants()
    assert grant.form == {
        "grant_type": "client_credentials",
        "scope": "metrics.read metrics.list",
        "audience": "prometheus",
    }
    assert base64.b64decode(grant.headers["authorization"][6:]).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    # Every query carried the one token: reused, never fetched per query.
    assert proxy.admitted() >= 50 and len(proxy.verdicts) == proxy.admitted()
    assert {r.headers["authorization"] for r in proxy.received} == {f"Bearer {idp.issued[0]}"}
    assert_no_secret(scaler, CLIENT_SECRET, idp.issued[0])
    proxy.close()


def test_an_expired_token_is_replaced_by_a_new_grant(
    start_scaler: StartScaler, prometheus: PrometheusServer, idp: OAuth2TokenEndpoint
) -> None:
    idp.expires_in = 2
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: idp.issued))
    scaler = oauth_scaler(start_scaler, idp, proxy.url, CLIENT_SECRET)
    assert scaler.value(trigger("prom-oauth", 3)) == 3
    time.sleep(2.5)  # past the token's lifetime: the next query must not send it
    assert scaler.value(trigger("prom-oauth", 4)) == 4
    assert len(idp.grants()) == 2
    assert proxy.received[-1].headers["authorization"] == f"Bearer {idp.issued[1]}"
    proxy.close()


def test_a_refused_client_is_unauthenticated_naming_the_token_endpoint(
    start_scaler: StartScaler, prometheus: PrometheusServer, idp: OAuth2TokenEndpoint
) -> None:
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: idp.issued))
    scaler = oauth_scaler(start_scaler, idp, proxy.url, "wrong-secret-Kx7")
    err = error_of(lambda: scaler.value(trigger("prom-oauth", 5)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "OAuth2 token endpoint" in err.details() and "client credentials" in err.details()
    assert "wrong-secret-Kx7" not in err.details()
    assert proxy.received == []  # nothing reached the source without a token
    assert_no_secret(scaler, "wrong-secret-Kx7")
    proxy.close()


def test_a_token_the_source_refuses_is_dropped_and_a_new_one_fetched(
    start_scaler: StartScaler, prometheus: PrometheusServer, idp: OAuth2TokenEndpoint
) -> None:
    # The source has revoked the first token it sees: its 401 names the provider, the next query gets a new one.
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: idp.issued[1:]))
    scaler = oauth_scaler(start_scaler, idp, proxy.url, CLIENT_SECRET)
    err = error_of(lambda: scaler.value(trigger("prom-oauth", 6)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "credentials sent: OAuth2 token endpoint" in err.details()
    time.sleep(0.3)  # past the error cache
    assert scaler.value(trigger("prom-oauth", 6)) == 6
    assert len(idp.grants()) == 2
    proxy.close()


@pytest.mark.parametrize(
    ("method", "param_name", "where"),
    [("header", "", "x-api-key"), ("header", "X-Prom-Key", "x-prom-key"), ("query", "", "api_key")],
)
def test_an_api_key_goes_only_where_method_and_key_param_name_say(
    start_scaler: StartScaler, prometheus: PrometheusServer, method: str, param_name: str, where: str
) -> None:
    key = "prom-api-key-7hQ"

    def admit(received: Received) -> str:
        in_query = parse_qs(received.query).get(where) == [key] if method == "query" else False
        in_header = received.headers.get(where) == key if method == "header" else False
        leaked = key in received.query if method == "header" else key in json.dumps(received.headers)
        return "ok" if (in_query or in_header) and not leaked else "no API key where expected"

    proxy = PrometheusAuthProxy(prometheus.url, admit, strip_params=(where,))
    metadata = {"serverAddress": proxy.url, "authModes": "apiKey", "method": method}
    if param_name:
        metadata["keyParamName"] = param_name
    config = connection_yaml("prom-key", metadata, fromEnv={"apiKey": "PROM_API_KEY"})
    scaler = start_scaler(config=config, env={"PROM_API_KEY": key}, **FAST)
    assert scaler.value(trigger("prom-key", 8)) == 8
    assert proxy.verdicts == ["ok"]
    assert "authorization" not in proxy.received[0].headers
    assert_no_secret(scaler, key)
    proxy.close()


# PromQL with spaces, quotes, '+', ',' and braces: the signature covers the query exactly as sent.
SIGNED_QUERY = 'label_replace(vector(3), "dst", "a b+c,{d}", "", "") + 0'


def test_amazon_managed_prometheus_static_keys_pass_botocores_sigv4_check(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    proxy = PrometheusAuthProxy(
        prometheus.url, lambda r: verify_sigv4(r, {"AKIDEXAMPLE": (secret, "")}, "eu-west-1", "aps")
    )
    metadata = {"serverAddress": proxy.url, "awsRegion": "eu-west-1", "awsAccessKeyID": "AKIDEXAMPLE"}
    config = connection_yaml("amp", metadata, fromEnv={"awsSecretAccessKey": "AMP_SECRET"})
    scaler = start_scaler(config=config, env={"AMP_SECRET": secret}, auth_cloud_hosts="127.0.0.1", **FAST)
    query = {"adapter": "prometheus", "connection": "amp", "query": SIGNED_QUERY, "threshold": "1"}
    assert scaler.value(query) == 3
    assert proxy.verdicts == ["ok"]
    assert_no_secret(scaler, secret)

    wrong = start_scaler(config=config, env={"AMP_SECRET": secret[:-1] + "X"}, auth_cloud_hosts="127.0.0.1", **FAST)
    err = error_of(lambda: wrong.value(query))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "AWS SigV4" in err.details()
    assert proxy.verdicts[-1] == "signature mismatch"
    proxy.close()


def test_irsa_credentials_from_sts_are_fetched_once_and_sign_every_query(
    start_scaler: StartScaler, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "web-identity-token"
    token_file.write_text("eyJ.web-identity.jwt")
    issued = IssuedCredentials("ASIATEMP", "temp-secret-9Lk", "session-token-3Fw", time.time() + 3600)
    sts = StsStandIn("arn:aws:iam::123456789012:role/keda-scaler", "eyJ.web-identity.jwt", issued)
    proxy = PrometheusAuthProxy(
        prometheus.url,
        lambda r: verify_sigv4(r, {"ASIATEMP": ("temp-secret-9Lk", "session-token-3Fw")}, "us-east-1", "aps"),
    )
    env = {
        "AWS_ROLE_ARN": sts.role_arn,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ENDPOINT_URL_STS": sts.url,
    }
    config = connection_yaml("amp", {"serverAddress": proxy.url, "awsRegion": "us-east-1", "podIdentity": "aws"})
    scaler = start_scaler(config=config, env=env, auth_cloud_hosts="127.0.0.1", **FAST)
    with ThreadPoolExecutor(5) as pool:
        values = list(pool.map(lambda i: scaler.value(trigger("amp", i), name=f"so-{i}"), range(1, 21)))
    assert values == list(range(1, 21))
    assert len(sts.calls()) == 1
    assert set(proxy.verdicts) == {"ok"}
    assert_no_secret(scaler, "temp-secret-9Lk", "session-token-3Fw", "eyJ.web-identity.jwt")
    proxy.close()
    sts.close()


@pytest.fixture
def google_key(tmp_path: Path) -> Iterator[tuple[GoogleTokenEndpoint, Path]]:
    placeholder, pem = service_account_key("key-1", "http://127.0.0.1:1/token")
    server = GoogleTokenEndpoint(pem, f"scaler@{PROJECT}.iam.gserviceaccount.com")
    path = tmp_path / "key.json"
    path.write_text(json.dumps(json.loads(placeholder) | {"token_uri": server.token_url}))
    yield server, path
    server.close()


def https_context(pki: Pki) -> ssl.SSLContext:
    crt, key = pki.issue("managed-prometheus", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    return context


def test_google_managed_prometheus_gets_the_key_s_token_only_at_an_endpoint_the_operator_names(
    start_scaler: StartScaler, prometheus: PrometheusServer, pki: Pki, google_key: tuple[GoogleTokenEndpoint, Path]
) -> None:
    google, key_path = google_key
    tokens = lambda: [f"ya29.token-{i}" for i in range(1, len(google.claims) + 1)]  # noqa: E731
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(tokens), ssl_context=https_context(pki))
    metadata = {"serverAddress": proxy.url, "caFile": str(pki.ca)}
    config = connection_yaml("gmp", metadata, fromFile={"credentials": str(key_path)})
    env = google_isolated_env()

    # Without auth_cloud_hosts a loopback address is not Google's: refused before any token is asked for.
    refused = start_scaler(config=config, env=env, **FAST)
    err = error_of(lambda: refused.spec(trigger("gmp", 1)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "serverAddress" in err.details()
    assert "Google" in err.details() and google.received == [] and proxy.received == []

    scaler = start_scaler(config=config, env=env, auth_cloud_hosts="127.0.0.1", **FAST)
    assert scaler.value(trigger("gmp", 11)) == 11
    assert scaler.value(trigger("gmp", 12)) == 12
    [claims] = google.claims
    assert claims["scope"] == "https://www.googleapis.com/auth/monitoring.read"
    assert proxy.verdicts == ["ok", "ok"]
    assert_no_secret(scaler, "ya29.token-1", json.loads(key_path.read_text())["private_key"][40:80])
    proxy.close()


def test_google_adc_of_the_scaler_pod_is_its_own_identity(
    start_scaler: StartScaler, prometheus: PrometheusServer, google_key: tuple[GoogleTokenEndpoint, Path]
) -> None:
    google, key_path = google_key
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: ["ya29.token-1"]))
    config = connection_yaml("gmp", {"serverAddress": proxy.url, "podIdentity": "gcp"})
    env = google_isolated_env(GOOGLE_APPLICATION_CREDENTIALS=str(key_path))
    scaler = start_scaler(config=config, env=env, auth_cloud_hosts="127.0.0.1", **FAST)
    assert scaler.value(trigger("gmp", 13)) == 13
    assert len(google.claims) == 1 and proxy.verdicts == ["ok"]
    proxy.close()


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[tuple[EntraIdStandIn, dict[str, str]]]:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJ.federated.sa-token")
    entra = EntraIdStandIn("tenant-1", "client-1", "eyJ.federated.sa-token")
    env = {
        "AZURE_CLIENT_ID": "client-1",
        "AZURE_TENANT_ID": "tenant-1",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": entra.url,
    }
    yield entra, env
    entra.close()


def test_azure_monitor_gets_a_workload_identity_token_for_its_scope(
    start_scaler: StartScaler, prometheus: PrometheusServer, azure: tuple[EntraIdStandIn, dict[str, str]]
) -> None:
    entra, env = azure
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: entra.issued))
    config = connection_yaml("azmon", {"serverAddress": proxy.url, "podIdentity": "azure-workload"})
    scaler = start_scaler(config=config, env=env, auth_cloud_hosts="127.0.0.1", **FAST)
    assert scaler.value(trigger("azmon", 14)) == 14
    assert scaler.value(trigger("azmon", 15)) == 15
    assert entra.issued == ["aad-1-https://prometheus.monitor.azure.com/.default"]
    assert proxy.verdicts == ["ok", "ok"]
    assert_no_secret(scaler, entra.issued[0], "eyJ.federated.sa-token")
    proxy.close()


def test_the_pods_own_identity_follows_ambient_credentials_namespaces(
    start_scaler: StartScaler, prometheus: PrometheusServer, azure: tuple[EntraIdStandIn, dict[str, str]]
) -> None:
    entra, env = azure
    proxy = PrometheusAuthProxy(prometheus.url, bearer_of(lambda: entra.issued))
    config = connection_yaml("azmon", {"serverAddress": proxy.url, "podIdentity": "azure-workload"})
    scaler = start_scaler(
        config=config, env=env, auth_cloud_hosts="127.0.0.1", ambient_credentials_namespaces="team-a", **FAST
    )
    inline = {"adapter": "prometheus", "serverAddress": proxy.url, "podIdentity": "azure-workload"}
    inline |= {"query": "vector(16)", "threshold": "1"}
    err = error_of(lambda: scaler.value(inline, namespace="team-b"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "ambient_credentials_namespaces" in err.details()
    assert entra.issued == []
    assert scaler.value(inline, namespace="team-a") == 16
    # A named connection is the operator's grant: any namespace it allows may use it.
    assert scaler.value(trigger("azmon", 17), namespace="team-b") == 17
    proxy.close()


@pytest.mark.parametrize(
    "key", ["clientSecret", "apiKey", "oauthTokenURI", "podIdentity", "awsSecretAccessKey", "credentials", "ca"]
)
def test_a_trigger_on_a_named_connection_may_not_set_auth_keys(
    start_scaler: StartScaler, idp: OAuth2TokenEndpoint, key: str
) -> None:
    scaler = oauth_scaler(start_scaler, idp, "http://127.0.0.1:9", CLIENT_SECRET)
    err = error_of(lambda: scaler.spec(trigger("prom-oauth", 1, **{key: "x"})))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and f"'{key}'" in err.details()
