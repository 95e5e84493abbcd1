"""KEDA's prometheus parse tests, row for row, through a real scaler's GetMetricSpec.

Rows: kedacore/keda pkg/scalers/prometheus_scaler_test.go `testPromMetadata`, `testPrometheusAuthMetadata`
and `prometheusMetricIdentifiers` at commit 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a. TriggerAuthentication
parameters are not forwarded to an external scaler: they are sent as metadata (or a named connection).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import pytest

from tests.fixtures._util import LoopbackHttpServer, QuietHandler
from tests.fixtures.keda_parity import Row, as_sent, ask, check
from tests.fixtures.scaler import ScalerProcess

B = {"serverAddress": "http://localhost:9090", "metricName": "http_requests_total", "threshold": "100", "query": "up"}

META_ROWS = [
    Row("empty", {}, None, False),
    Row("all properly formed", B, None, True, "prometheus", 100),
    Row("with namespace", {**B, "namespace": "foo"}, None, True),
    Row("with ignoreNullValues", {**B, "ignoreNullValues": "false"}, None, True),
    Row("with activationThreshold", {**B, "activationThreshold": "50"}, None, True),
    Row("missing serverAddress", {**B, "serverAddress": ""}, None, False),
    Row("missing threshold", {k: v for k, v in B.items() if k != "threshold"}, None, False),
    Row("malformed threshold", {**B, "threshold": "one"}, None, False),
    Row("malformed activationThreshold", {**B, "activationThreshold": "one"}, None, False),
    Row("missing query", {**B, "query": ""}, None, False),
    Row("ignoreNullValues with wrong value", {**B, "ignoreNullValues": "xxxx"}, None, False),
    Row("unsafeSsl", {**B, "serverAddress": "https://localhost:9090", "unsafeSsl": "true"}, None, True),
    Row("customHeaders", {**B, "customHeaders": "key1=value1,key2=value2"}, None, True),
    Row("customHeaders with wrong format", {**B, "customHeaders": "key1=value1,key2"}, None, False),
    Row("queryParameters", {**B, "queryParameters": "key1=value1,key2=value2"}, None, True),
    Row("queryParameters with wrong format", {**B, "queryParameters": "key1=value1,key2"}, None, False),
    Row("valid custom http client timeout", {**B, "timeout": "1000"}, None, True),
    Row("negative timeout", {**B, "timeout": "-1"}, None, False),
    Row("timeout not a number", {**B, "timeout": "a"}, None, False),
]

TLS = {"ca": "caaa", "cert": "ceert", "key": "keey"}
AUTH_ROWS = [
    Row("success TLS", {**B, "authModes": "tls"}, TLS, True),
    Row("TLS, ca is optional", {**B, "authModes": "tls"}, {"cert": "ceert", "key": "keey"}, True),
    Row("fail TLS, key not given", {**B, "authModes": "tls"}, {"ca": "caaa", "cert": "ceert"}, False),
    Row("fail TLS, cert not given", {**B, "authModes": "tls"}, {"ca": "caaa", "key": "keey"}, False),
    Row("success bearer default", {**B, "authModes": "bearer"}, {"bearerToken": "tooooken"}, True),
    Row("fail bearerAuth with no token", {**B, "authModes": "bearer"}, {}, False),
    Row("success basicAuth", {**B, "authModes": "basic"}, {"username": "user", "password": "pass"}, True),
    Row("fail basicAuth with no username", {**B, "authModes": "basic"}, {}, False),
    Row("tls, basic", {**B, "authModes": "tls, basic"}, {**TLS, "username": "user", "password": "pass"}, True),
    Row("tls,basic without tls material", {**B, "authModes": "tls,basic"}, {"username": "u", "password": "p"}, False),
    Row(
        "success custom auth",
        {**B, "authModes": "custom"},
        {"customAuthHeader": "header", "customAuthValue": "v"},
        True,
    ),
    Row("fail custom auth with no customAuthHeader", {**B, "authModes": "custom"}, {"customAuthHeader": ""}, False),
    Row("fail custom auth with no customAuthValue", {**B, "authModes": "custom"}, {"customAuthValue": ""}, False),
    Row(
        "custom auth with newlines",
        {**B, "authModes": "custom"},
        {"customAuthHeader": "header\n", "customAuthValue": "value\n"},
        True,
    ),
    Row("tls,basic again", {**B, "authModes": "tls,basic"}, {"username": "user", "password": "pass"}, False),
    Row(
        "pod identity and other auth modes",
        {**B, "authModes": "basic"},
        # KEDA's row sets podIdentity azure-workload in the TriggerAuthentication, which KEDA does not
        # forward: here it is the metadata key `podIdentity` (a named connection's, in practice).
        {"username": "user", "password": "pass", "podIdentity": "azure-workload"},
        False,
    ),
    Row("azure workload identity", B, None, True),
    Row("azure pod identity", B, None, True),
]

# Every row now gets KEDA's answer: PEM `ca`/`cert`/`key`, apiKey and oauth are implemented (adapters/auth),
# and `podIdentity` is read from the metadata. A new deliberate difference goes here with its reason.
DIFFERENCES: dict[str, str] = {}


def test_every_keda_row_gets_kedas_answer_or_a_listed_difference(scaler: ScalerProcess) -> None:
    rows = META_ROWS + AUTH_ROWS
    agreed = [check(row, ask(scaler, as_sent(row, {}, "prometheus")), DIFFERENCES) for row in rows]
    assert sum(agreed[: len(META_ROWS)]) == len(META_ROWS) == 19
    assert sum(agreed[len(META_ROWS) :]) == len(AUTH_ROWS) - len(DIFFERENCES) == 18


@pytest.mark.parametrize(
    ("extra", "refused_key"),
    [
        ({"authModes": "bearer,basic", "bearerToken": "t", "username": "u"}, "authModes"),  # exclusive
        ({"authModes": "oauth", "oauthTokenURI": "https://idp.example/token", "clientID": "c"}, ""),
        ({"authModes": "oauth", "clientID": "c"}, "oauthTokenURI"),
        ({"authModes": "apiKey", "apiKey": "k"}, ""),
        ({"authModes": "apiKey", "apiKey": "k", "method": "cookie"}, "method"),
        ({"authModes": "apiKey"}, "apiKey"),
        (
            {"authModes": "basic,oauth", "username": "u", "oauthTokenURI": "https://idp.example/t", "clientID": "c"},
            "authModes",
        ),
        ({"podIdentity": "azure-workload", "authModes": "bearer", "bearerToken": "t"}, "authModes"),
        ({"podIdentity": "kerberos"}, "podIdentity"),
        ({"authModes": "kerberos"}, "authModes"),
        ({"authMode": "bearer", "token": "t"}, ""),  # KEDA's aliases
        ({"timeout": "1m30s"}, ""),
        ({"unsafeSsl": "T"}, ""),
        ({"unsafeSsl": "yes"}, "unsafeSsl"),  # not a Go boolean
    ],
)
def test_auth_modes_and_typed_rules(scaler: ScalerProcess, extra: dict[str, str], refused_key: str) -> None:
    outcome = ask(scaler, {"adapter": "prometheus", **B, **extra})
    assert outcome.accepted == (not refused_key), outcome.details
    if refused_key:
        assert f"'{refused_key}'" in outcome.details
    assert "not supported" not in outcome.details


class RecordingPrometheus:
    """A loopback Prometheus query API that records each request's credentials headers and answers `body`."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.body = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}'
        recorder = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.reply(200, recorder.body)

        self.http = LoopbackHttpServer(Handler)
        self.url = self.http.url


@pytest.fixture
def source() -> Iterator[RecordingPrometheus]:
    recorder = RecordingPrometheus()
    yield recorder
    recorder.http.close()


CREDENTIALS = {
    "username": "user",
    "password": "pass",
    "bearerToken": "tok",
    "customAuthHeader": "X-Key",
    "customAuthValue": "kv",
}
BASIC = "Basic " + base64.b64encode(b"user:pass").decode()


@pytest.mark.parametrize(
    ("modes", "authorization", "custom"),
    [
        ("bearer", "Bearer tok", None),  # username/password present: no Basic (it used to win)
        ("basic", BASIC, None),
        ("custom", None, "kv"),
        ("bearer,custom", "Bearer tok", "kv"),
    ],
)
def test_each_auth_mode_sends_only_its_own_credentials(
    scaler: ScalerProcess, source: RecordingPrometheus, modes: str, authorization: str | None, custom: str | None
) -> None:
    metadata = {
        "adapter": "prometheus",
        "serverAddress": source.url,
        "query": f"vector({len(modes)})",
        "threshold": "1",
        "authModes": modes,
        **CREDENTIALS,
    }
    assert scaler.value(metadata) == 7
    [headers] = source.headers
    assert headers.get("authorization") == authorization
    assert headers.get("x-key") == custom


@pytest.mark.parametrize(("ignore", "expected"), [("true", 0.0), ("false", None)])
def test_a_series_with_an_empty_value_reads_as_kedas(
    scaler: ScalerProcess, source: RecordingPrometheus, ignore: str, expected: float | None
) -> None:
    source.body = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[]}]}}'
    metadata = {
        "adapter": "prometheus",
        "serverAddress": source.url,
        "query": f"up + {len(ignore)}",
        "threshold": "1",
        "ignoreNullValues": ignore,
    }
    if expected is not None:
        assert scaler.value(metadata) == expected
        return
    with pytest.raises(grpc.RpcError) as err:
        scaler.value(metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "ignoreNullValues" in err.value.details()
