"""KEDA's auth rules per adapter family (facts from kedacore/keda's authentication package,
prometheus_scaler.go and rabbitmq_scaler.go), and what each mode actually sends."""

from __future__ import annotations

import base64
import logging

import pytest

from adapters.auth import OutgoingRequest, prometheus_auth, rabbitmq_auth
from adapters.auth.request import send_json
from adapters.errors import InvalidMetadata
from adapters.http import HttpClients, HttpEndpoint
from tests.fixtures.auth_servers import RecordingSource

PASSWORD, TOKEN = "basic-password-123", "bearer-token-456789"


async def sent(values: dict[str, str], source: RecordingSource, http: HttpClients) -> dict[str, str]:
    """The headers and query the source received for one request with this trigger's auth."""
    source.open = True
    auth = prometheus_auth({"serverAddress": source.url, **values})
    request = await auth.apply(
        OutgoingRequest("GET", f"{source.url}/api/v1/query", (("query", "up"),)), http, timeout=5
    )
    await send_json(http, request, endpoint=HttpEndpoint.for_url(source.url), source="src", timeout=5)
    received = source.received[-1]
    return {**received.headers, "?": received.query}


async def test_bearer_with_username_and_password_present_sends_only_the_bearer_token(
    recording_source: RecordingSource, http: HttpClients
) -> None:
    got = await sent(
        {"authModes": "bearer", "bearerToken": TOKEN, "username": "u", "password": PASSWORD}, recording_source, http
    )
    assert got["authorization"] == f"Bearer {TOKEN}"


async def test_basic_sends_only_basic_credentials(recording_source: RecordingSource, http: HttpClients) -> None:
    got = await sent(
        {"authMode": "basic", "username": "user", "password": PASSWORD, "bearerToken": TOKEN}, recording_source, http
    )
    assert base64.b64decode(got["authorization"].removeprefix("Basic ")).decode() == f"user:{PASSWORD}"


async def test_token_is_an_alias_of_bearer_token_and_custom_adds_its_header(
    recording_source: RecordingSource, http: HttpClients
) -> None:
    got = await sent(
        {"authModes": "bearer,custom", "token": TOKEN, "customAuthHeader": "X-Org", "customAuthValue": "org-secret-1"},
        recording_source,
        http,
    )
    assert got["authorization"] == f"Bearer {TOKEN}" and got["x-org"] == "org-secret-1"


@pytest.mark.parametrize(
    ("values", "header", "param"),
    [
        ({"apiKey": "key-value-12345"}, ("x-api-key", "key-value-12345"), None),
        ({"apiKey": "key-value-12345", "method": "query"}, None, "api_key=key-value-12345"),
        ({"apiKey": "key-value-12345", "method": "query", "keyParamName": "token"}, None, "token=key-value-12345"),
        ({"apiKey": "key-value-12345", "keyParamName": "X-Key"}, ("x-key", "key-value-12345"), None),
    ],
)
async def test_api_keys_go_where_method_and_key_param_name_say_with_kedas_defaults(
    recording_source: RecordingSource,
    http: HttpClients,
    values: dict[str, str],
    header: tuple[str, str] | None,
    param: str | None,
) -> None:
    got = await sent({"authModes": "apiKey", **values}, recording_source, http)
    if header:
        assert got[header[0]] == header[1] and "key-value" not in got["?"]
    if param:
        assert param in got["?"].split("&") and "x-api-key" not in got


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        ({"authModes": "bearer,basic", "bearerToken": TOKEN, "username": "u"}, "authModes", "exclude each other"),
        (
            {"authModes": "oauth,bearer", "bearerToken": TOKEN, "oauthTokenURI": "https://t/", "clientID": "c"},
            "authModes",
            "exclude each other",
        ),
        ({"username": "u", "password": PASSWORD, "bearerToken": TOKEN}, "authModes", "set authModes"),
        ({"authModes": "kerberos"}, "authModes", "unknown mode 'kerberos'"),
        ({"authModes": "bearer"}, "bearerToken", "required"),
        ({"authModes": "basic", "password": PASSWORD}, "username", "required"),
        ({"authModes": "oauth", "clientID": "c"}, "oauthTokenURI", "required"),
        ({"authModes": "custom", "customAuthHeader": "X"}, "customAuthHeader", "required"),
        ({"authModes": "apiKey"}, "apiKey", "required"),
        ({"authModes": "apiKey", "apiKey": "k", "method": "cookie"}, "method", "header or query"),
        ({"authModes": "tls", "cert": "PEM"}, "cert", "required"),
        (
            {"authModes": "basic", "username": "u", "podIdentity": "aws", "awsRegion": "eu-west-1"},
            "authModes",
            "pod identity",
        ),
        ({"podIdentity": "kiam"}, "podIdentity", "unknown provider"),
        ({"podIdentity": "aws"}, "awsRegion", "required"),
        ({"oauthTokenURI": "file:///etc/passwd", "clientID": "c", "authModes": "oauth"}, "oauthTokenURI", "http"),
        (
            {"authModes": "oauth", "oauthTokenURI": "https://t/", "clientID": "c", "endpointParams": "a=b;c"},
            "endpointParams",
            "URL query",
        ),
    ],
)
def test_prometheus_auth_refusals_name_the_key(values: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        prometheus_auth({"serverAddress": "https://prom.example", **values})
    assert caught.value.key == key and fragment in caught.value.message
    assert PASSWORD not in caught.value.message and TOKEN not in caught.value.message


def test_oauth_reads_kedas_scope_alias_and_endpoint_params_and_declares_its_token_uri() -> None:
    auth = prometheus_auth(
        {
            "serverAddress": "https://prom.example",
            "authModes": "oauth",
            "oauthTokenURI": "https://idp.example/token",
            "clientID": "c",
            "clientSecret": "client-secret-1",
            "scope": "a, b",
            "endpointParams": "audience=x&resource=y",
        }
    )
    (provider,) = auth.providers
    assert auth.addresses() == [("oauthTokenURI", "https://idp.example/token")]
    assert provider._scopes == ("a", "b") and provider._params == (("audience", "x"), ("resource", "y"))  # type: ignore[attr-defined]
    assert "client-secret-1" not in repr(auth) + repr(provider)


@pytest.mark.parametrize(
    ("pod_identity", "server", "env"),
    [
        ("gcp", "https://evil.example/prometheus", {}),
        ("aws", "https://evil.example", {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret-secret"}),
        (
            "azure-workload",
            "http://ws.eastus.prometheus.monitor.azure.com",
            {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"},
        ),
    ],
)
def test_cloud_credentials_go_only_to_their_clouds_managed_endpoint(
    pod_identity: str, server: str, env: dict[str, str]
) -> None:
    values = {"serverAddress": server, "podIdentity": pod_identity, "awsRegion": "eu-west-1"}
    with pytest.raises(InvalidMetadata) as caught:
        prometheus_auth(values, environ=env)
    assert caught.value.key == "serverAddress"
    allowed = {
        "gcp": "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus",
        "aws": "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1",
        "azure-workload": "https://ws.eastus.prometheus.monitor.azure.com",
    }[pod_identity]
    auth = prometheus_auth({**values, "serverAddress": allowed}, environ=env)
    assert auth.ambient and len(auth.providers) == 1


def test_an_operator_listed_host_may_receive_the_pods_identity() -> None:
    env = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"}
    auth = prometheus_auth(
        {"serverAddress": "http://127.0.0.1:9090", "podIdentity": "azure-workload", "cloud": "AzureUSGovernmentCloud"},
        environ=env,
        cloud_hosts=("127.0.0.1",),
    )
    assert auth.providers[0].scope == "https://prometheus.monitor.azure.us/.default"  # type: ignore[attr-defined]


def test_no_auth_keys_means_no_providers() -> None:
    assert prometheus_auth({"serverAddress": "http://prom:9090"}).providers == ()


# --- RabbitMQ --------------------------------------------------------------------------------

OAUTH = {"oauthTokenURI": "https://idp.example/token", "clientID": "scaler", "clientSecret": "client-secret-9"}


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        ({"host": "amqp://h", **OAUTH}, "oauthTokenURI", "only with the HTTP protocol"),
        ({"host": "http://h", "username": "u", "password": PASSWORD, **OAUTH}, "oauthTokenURI", "cannot be combined"),
        ({"host": "http://h", "workloadIdentityResource": "api://rmq", **OAUTH}, "oauthTokenURI", "cannot be combined"),
        ({"host": "http://h", "oauthTokenURI": "https://idp/token", "clientID": "c"}, "clientSecret", "needs"),
        ({"host": "amqp://h", "workloadIdentityResource": "api://rmq"}, "workloadIdentityResource", "HTTP protocol"),
        ({"host": "amqp://h", "tls": "yes"}, "tls", "enable or disable"),
        ({"host": "amqp://h", "cert": "PEM"}, "key", "both key and certificate"),
        ({"host": "amqp://h", "username": "u"}, "password", "given together"),
        ({"host": "ftp://h"}, "host", "unknown URL scheme"),
        ({"host": "amqp://h", "protocol": "stomp"}, "protocol", "auto, amqp or http"),
    ],
)
def test_rabbitmq_exclusions_name_the_key(values: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        rabbitmq_auth(values)
    assert caught.value.key == key and fragment in caught.value.message
    assert "client-secret-9" not in caught.value.message


@pytest.mark.parametrize(
    ("values", "external"),
    [
        ({"host": "amqps://h", "tls": "enable", "cert": "C", "key": "K"}, True),
        ({"host": "amqps://u:p@h", "tls": "enable", "cert": "C", "key": "K"}, False),
        ({"host": "amqps://h", "tls": "enable", "cert": "C", "key": "K", "username": "u", "password": "p"}, False),
        ({"host": "amqps://h", "tls": "disable", "cert": "C", "key": "K"}, False),
        ({"host": "amqps://h", "tls": "enable"}, False),
    ],
)
def test_a_client_certificate_without_a_password_logs_in_by_sasl_external(
    values: dict[str, str], external: bool
) -> None:
    assert rabbitmq_auth(values).sasl_external is external


def test_rabbitmq_oauth2_and_workload_identity_are_management_api_providers() -> None:
    oauth = rabbitmq_auth({"host": "https://rmq:15671", "scopes": "rabbitmq.read:*/*", **OAUTH})
    assert oauth.protocol == "http" and [p.name for p in oauth.http_providers] == ["OAuth2 token endpoint"]
    assert oauth.addresses() == [("oauthTokenURI", OAUTH["oauthTokenURI"])]
    env = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"}
    azure = rabbitmq_auth({"host": "http://rmq:15672", "workloadIdentityResource": "api://rabbitmq"}, environ=env)
    assert azure.http_providers[0].scope == "api://rabbitmq/.default"  # type: ignore[attr-defined]


async def test_no_secret_reaches_debug_logs_while_sending(
    recording_source: RecordingSource, http: HttpClients, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await sent(
            {
                "authModes": "basic,custom",
                "username": "u",
                "password": PASSWORD,
                "customAuthHeader": "X-T",
                "customAuthValue": TOKEN,
            },
            recording_source,
            http,
        )
    assert PASSWORD not in caplog.text and TOKEN not in caplog.text


def test_a_named_connections_google_key_is_not_sent_to_a_server_the_trigger_chose() -> None:
    from tests.fixtures.pubsub import service_account_key

    key, _ = service_account_key("key-1", "https://oauth2.googleapis.com/token")
    with pytest.raises(InvalidMetadata) as caught:
        prometheus_auth({"serverAddress": "https://collector.example/", "credentials": key})
    assert caught.value.key == "serverAddress" and "Google credentials are sent only" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message
