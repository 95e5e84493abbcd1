"""RabbitMQ authentication end to end, against a broker node of our own (never the shared one):
- `rabbitmq_auth_mechanism_ssl` with a TLS listener requiring client certificates: a certificate alone
  (PEM contents, KEDA's `tls`/`ca`/`cert`/`key`/`keyPassword`) logs in by SASL EXTERNAL as its CN;
- `rabbitmq_auth_backend_oauth2` trusting a signing key the tests generate: the scaler gets a JWT from
  the loopback token endpoint by client credentials, and the management API answers readings with it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.fixtures._util import free_port, port_open, wait_for
from tests.fixtures.auth_servers import EntraIdStandIn, JwtTokenEndpoint, Received, StandIn
from tests.fixtures.certs import Pki
from tests.fixtures.rabbitmq import RabbitBroker, RabbitNode
from tests.fixtures.scaler import ScalerProcess, StartScaler, error_of

CLIENT_ID, CLIENT_SECRET = "keda-scaler", "rabbit-oauth-s3cret"
CERT_USER = "keda-cert-user"  # the client certificate's CN, a broker user without a usable password
FAST = {"cache_ttl": 0.2, "error_cache_ttl": 0.2, "log_level": "DEBUG"}


@dataclass
class AuthBroker:
    broker: RabbitBroker
    tls_port: int
    idp: JwtTokenEndpoint
    queue: str

    def amqps(self) -> str:
        return f"amqps://localhost:{self.tls_port}/%2F"

    def management(self) -> str:
        return f"http://127.0.0.1:{self.broker.management_port}/%2F"


@pytest.fixture(scope="module")
def auth_broker(pki: Pki) -> Iterator[AuthBroker]:
    tls_port = free_port()
    idp = JwtTokenEndpoint(CLIENT_ID, CLIENT_SECRET)
    server_crt, server_key = pki.issue("rabbit-server", server=True)

    def config(workdir: Path) -> str:
        public_key = workdir / "signing-key.pem"
        public_key.write_text(idp.public_pem)
        for path in (server_key, public_key):
            path.chmod(0o644)  # the broker may run as another user than the test
        return (
            f"listeners.ssl.1 = 127.0.0.1:{tls_port}\n"
            f"ssl_options.cacertfile = {pki.ca}\n"
            f"ssl_options.certfile = {server_crt}\n"
            f"ssl_options.keyfile = {server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
            "auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL\n"
            "ssl_cert_login_from = common_name\n"
            "auth_backends.1 = rabbit_auth_backend_oauth2\nauth_backends.2 = rabbit_auth_backend_internal\n"
            "auth_oauth2.resource_server_id = rabbitmq\n"
            "auth_oauth2.default_key = test-key\n"
            f"auth_oauth2.signing_keys.test-key = {public_key}\n"
        )

    node = RabbitNode(config)
    (node.workdir / "enabled_plugins").write_text(
        "[rabbitmq_management,rabbitmq_auth_mechanism_ssl,rabbitmq_auth_backend_oauth2].\n"
    )
    node.start()
    broker = RabbitBroker("127.0.0.1", node.amqp_port, node.management_port, "guest", "guest", node=node)
    try:
        wait_for(lambda: port_open(tls_port), 30, "the TLS listener")
        node.ctl("add_user", CERT_USER, "unused-password-1")
        node.ctl("set_permissions", "-p", "/", CERT_USER, ".*", ".*", ".*")
        queue = broker.declare("auth", vhost="/")
        broker.publish(queue, 6, vhost="/")
        broker.close_clients()
        broker.wait_for_messages(queue, 6)
        yield AuthBroker(broker, tls_port, idp, queue)
    finally:
        broker.close_clients()
        node.stop()
        idp.close()


def pem_of(pki: Pki, name: str, ca: str = "ca") -> dict[str, str]:
    crt, key = pki.issue(name, server=False, ca=ca)
    return {"ca": pki.ca.read_text(), "cert": crt.read_text(), "key": key.read_text()}


def rabbit_connection(name: str, metadata: dict[str, str], **sections: dict[str, str]) -> str:
    return json.dumps({"connections": {name: {"adapter": "rabbitmq", "metadata": metadata, **sections}}})


def reading(connection: str, queue: str) -> dict[str, str]:
    return {"adapter": "rabbitmq", "connection": connection, "queueName": queue, "mode": "QueueLength", "value": "2"}


def over_tls(auth_broker: AuthBroker, **extra: str) -> dict[str, str]:
    host = auth_broker.amqps()
    return {"adapter": "rabbitmq", "host": host, "tls": "enable", "queueName": auth_broker.queue, "value": "2", **extra}


def test_a_client_certificate_alone_logs_in_by_sasl_external(
    start_scaler: StartScaler, auth_broker: AuthBroker, pki: Pki
) -> None:
    pem = pem_of(pki, CERT_USER)
    scaler = start_scaler(**FAST)
    assert scaler.value(over_tls(auth_broker, mode="QueueLength", **pem)) == 6

    # The broker lists a connection authenticated as the certificate's CN, by EXTERNAL.
    def logins() -> set[tuple[str, str]]:
        connections = auth_broker.broker.api("GET", "connections").json()
        return {(c.get("user"), c.get("auth_mechanism")) for c in connections}

    wait_for(lambda: (CERT_USER, "EXTERNAL") in logins(), 20, "the broker to list the EXTERNAL login")
    assert pem["key"].splitlines()[1] not in scaler.logs()


def test_a_certificate_whose_cn_is_no_user_is_unauthenticated(
    start_scaler: StartScaler, auth_broker: AuthBroker, pki: Pki
) -> None:
    scaler = start_scaler(**FAST)
    metadata = {"adapter": "rabbitmq", "host": auth_broker.amqps(), "tls": "enable", "queueName": auth_broker.queue}
    err = error_of(
        lambda: scaler.value({**metadata, **pem_of(pki, "nobody-here"), "mode": "QueueLength", "value": "2"})
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert "client certificate" in err.details()


def test_a_certificate_from_another_ca_fails_tls(start_scaler: StartScaler, auth_broker: AuthBroker, pki: Pki) -> None:
    scaler = start_scaler(**FAST)
    pem = pem_of(pki, "rogue-client", ca="rogue-ca")
    err = error_of(lambda: scaler.value(over_tls(auth_broker, mode="QueueLength", **pem)))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED), err.details()


def test_an_encrypted_key_needs_its_key_password(start_scaler: StartScaler, auth_broker: AuthBroker, pki: Pki) -> None:
    crt, key = pki.issue(CERT_USER, server=False)
    encrypted = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:key-pass-4Tq"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    scaler = start_scaler(**FAST)
    metadata = {"adapter": "rabbitmq", "host": auth_broker.amqps(), "tls": "enable", "queueName": auth_broker.queue}
    metadata |= {
        "ca": pki.ca.read_text(),
        "cert": crt.read_text(),
        "key": encrypted,
        "mode": "QueueLength",
        "value": "2",
    }
    assert scaler.value({**metadata, "keyPassword": "key-pass-4Tq"}) == 6
    err = error_of(lambda: scaler.value({**metadata, "keyPassword": "wrong-pass"}))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "'keyPassword'" in err.details()
    err = error_of(lambda: scaler.value(metadata))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "keyPassword" in err.details()
    assert "key-pass-4Tq" not in scaler.logs()


def oauth_scaler(start_scaler: StartScaler, auth_broker: AuthBroker, secret: str = CLIENT_SECRET) -> ScalerProcess:
    metadata = {
        "host": auth_broker.management(),
        "protocol": "http",
        "oauthTokenURI": auth_broker.idp.token_url,
        "clientID": CLIENT_ID,
        "scopes": "rabbitmq.read:*/*,rabbitmq.tag:monitoring",
    }
    config = rabbit_connection("rabbit-oauth", metadata, fromEnv={"clientSecret": "RABBIT_OAUTH_SECRET"})
    return start_scaler(config=config, env={"RABBIT_OAUTH_SECRET": secret}, **FAST)


def test_the_management_api_answers_with_a_jwt_from_client_credentials(
    start_scaler: StartScaler, auth_broker: AuthBroker
) -> None:
    idp = auth_broker.idp
    before = len(idp.grants())
    scaler = oauth_scaler(start_scaler, auth_broker)
    for i in range(5):
        assert scaler.value(reading("rabbit-oauth", auth_broker.queue), name=f"so-{i}") == 6
        time.sleep(0.25)  # past the reading cache: every one asks the broker again
    grants = idp.grants()[before:]
    assert len(grants) == 1  # one token, reused for every reading
    assert grants[0].form == {"grant_type": "client_credentials", "scope": "rabbitmq.read:*/* rabbitmq.tag:monitoring"}
    for secret in (CLIENT_SECRET, idp.issued[-1]):
        assert secret not in scaler.logs() and secret not in scaler.metrics_text()


@pytest.mark.parametrize(("change", "value"), [("lifetime", -120), ("audience", "another-service")])
def test_an_expired_or_wrongly_scoped_token_is_refused(
    start_scaler: StartScaler, auth_broker: AuthBroker, change: str, value: object
) -> None:
    idp = auth_broker.idp
    saved = getattr(idp, change)
    setattr(idp, change, value)
    try:
        scaler = oauth_scaler(start_scaler, auth_broker)
        err = error_of(lambda: scaler.value(reading("rabbit-oauth", auth_broker.queue)))
    finally:
        setattr(idp, change, saved)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert "OAuth2 token endpoint" in err.details()


def test_a_refused_client_secret_is_unauthenticated_naming_the_provider(
    start_scaler: StartScaler, auth_broker: AuthBroker
) -> None:
    scaler = oauth_scaler(start_scaler, auth_broker, secret="not-the-secret-8Hn")
    err = error_of(lambda: scaler.value(reading("rabbit-oauth", auth_broker.queue)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "OAuth2 token endpoint" in err.details() and "not-the-secret-8Hn" not in err.details()


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"host": "amqp://127.0.0.1:5672/", "protocol": "amqp"}, "oauthTokenURI"),  # OAuth2 only over HTTP
        ({"username": "u", "password": "p"}, "oauthTokenURI"),  # not with basic auth
        ({"workloadIdentityResource": "api://rabbit"}, "oauthTokenURI"),  # not with workload identity
        ({"clientSecret": ""}, "clientSecret"),  # all three needed
    ],
)
def test_kedas_oauth2_exclusions_are_invalid_argument(scaler: ScalerProcess, extra: dict[str, str], key: str) -> None:
    metadata = {
        "adapter": "rabbitmq",
        "host": "http://127.0.0.1:15672/",
        "queueName": "q",
        "oauthTokenURI": "http://127.0.0.1:1/token",
        "clientID": "c",
        "clientSecret": "s",
        **extra,
    }
    err = error_of(lambda: scaler.spec({k: v for k, v in metadata.items() if v}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and f"'{key}'" in err.details()


class ManagementStandIn(StandIn):
    """The management API's queue object (GET /api/queues/<vhost>/<queue>), for a bearer token in `accepted`."""

    def __init__(self, accepted: Callable[[], list[str]]) -> None:
        super().__init__()
        self.accepted = accepted

    def answer(self, received: Received) -> tuple[int, object]:
        if received.headers.get("authorization") not in {f"Bearer {t}" for t in self.accepted()}:
            return 401, {"error": "not_authorized", "reason": "Not_Authorized"}
        if received.path != "/api/queues/%2F/orders":
            return 404, {"error": "Object Not Found"}
        return 200, {"name": "orders", "messages": 7, "messages_ready": 7}


def test_workload_identity_gets_the_management_api_a_token_for_its_resource(
    start_scaler: StartScaler, tmp_path: Path
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJ.federated.rabbit")
    entra = EntraIdStandIn("tenant-r", "client-r", "eyJ.federated.rabbit")
    management = ManagementStandIn(lambda: entra.issued)
    env = {
        "AZURE_CLIENT_ID": "client-r",
        "AZURE_TENANT_ID": "tenant-r",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": entra.url,
    }
    config = rabbit_connection(
        "rabbit-wi", {"host": f"{management.url}/%2F", "protocol": "http", "workloadIdentityResource": "api://rabbit"}
    )
    scaler = start_scaler(config=config, env=env, ambient_credentials_namespaces="team-a", **FAST)
    assert scaler.value(reading("rabbit-wi", "orders"), namespace="team-b") == 7
    assert entra.issued == ["aad-1-api://rabbit/.default"]
    assert "basic" not in management.received[0].headers.get("authorization", "").lower()
    # Set by a trigger itself, the pod's identity follows ambient_credentials_namespaces.
    inline = {"adapter": "rabbitmq", "host": f"{management.url}/%2F", "workloadIdentityResource": "api://rabbit"}
    inline |= {"queueName": "orders", "mode": "QueueLength", "value": "2"}
    err = error_of(lambda: scaler.value(inline, namespace="team-b"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "ambient_credentials_namespaces" in err.details()
    assert scaler.value(inline, namespace="team-a") == 7
    management.close()
    entra.close()
