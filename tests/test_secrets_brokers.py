"""No secret from the broker adapters' metadata leaves the scaler, on any failure path.

RabbitMQ: a wrong password in the amqp:// or http:// URL's userinfo (plain and percent-encoded) and in
`password`, over AMQP and the management API, plus unreachable, TLS-mismatched, policy-refused and
invalid triggers carrying passwords. Pub/Sub: inline `credentials` (a service account key) that is not
JSON, whose private key is broken, whose token endpoint is closed, refuses it or is refused by the egress
policy, and of a type other than a service account key.
Everything is real: the shared broker (wrong passwords only), a real HTTP token endpoint on 127.0.0.1.
Logs (DEBUG, json and text), gRPC error details, /metrics and the CLI's output are searched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import StatusCode as Code

from tests.fixtures._secrets import assert_no_secret, run_cli
from tests.fixtures._util import free_port
from tests.fixtures.pubsub import PROJECT, TokenEndpoint, google_isolated_env, service_account_key
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import StartScaler

SECRETS = {
    "amqp_url": "pw-amqp-url-Ha31",
    "amqp_encoded": "pw%40amqp-Hb32",
    "amqp_decoded": "pw@amqp-Hb32",
    "amqp_password": "pw-amqp-field-Hc33",
    "http_url": "pw-http-url-Hd34",
    "http_password": "pw-http-field-He35",
    "gone": "pw-rabbit-gone-Hf36",
    "tls": "pw-rabbit-tls-Hg37",
    "policy": "pw-rabbit-policy-Hh38",
    "invalid": "pw-rabbit-invalid-Hi39",
    "not_json": "creds-not-json-Hj40",
    "broken_key": "creds-broken-key-Hk41",
}


def service_account(key_id: str, token_uri: str, *, broken: bool = False) -> tuple[str, dict[str, str]]:
    """A service account key document, and its secrets: the key id, a line of the key, the whole document."""
    document, pem = service_account_key(key_id, token_uri)
    body_line = pem.splitlines()[5]  # 64 characters of the key itself
    if broken:
        document = document.replace(body_line, SECRETS["broken_key"] * 3)
        body_line = SECRETS["broken_key"]
    return document, {f"{key_id} id": key_id, f"{key_id} key": body_line, f"{key_id} document": document}


def rabbit_triggers(broker: RabbitBroker) -> list[tuple[dict[str, str], Code | None]]:
    s, vhost = SECRETS, broker.vhost
    base = {"adapter": "rabbitmq", "queueName": "orders", "mode": "QueueLength", "value": "5"}
    amqp = f"amqp://127.0.0.1:{broker.amqp_port}/{vhost}"
    http = f"http://127.0.0.1:{broker.management_port}/{vhost}"
    return [
        ({**base, "host": broker.amqp_host(password=s["amqp_url"])}, Code.UNAUTHENTICATED),
        ({**base, "host": broker.amqp_host(password=s["amqp_decoded"])}, Code.UNAUTHENTICATED),
        ({**base, "host": amqp, "username": "guest", "password": s["amqp_password"]}, Code.UNAUTHENTICATED),
        ({**base, "host": broker.http_host(password=s["http_url"])}, Code.UNAUTHENTICATED),
        ({**base, "host": http, "username": "guest", "password": s["http_password"]}, Code.UNAUTHENTICATED),
        ({**base, "host": f"amqp://guest:{s['gone']}@127.0.0.1:{free_port()}/"}, Code.UNAVAILABLE),
        ({**base, "host": f"http://guest:{s['gone']}@127.0.0.1:{free_port()}/"}, Code.UNAVAILABLE),
        ({**base, "host": f"amqps://guest:{s['tls']}@127.0.0.1:{broker.amqp_port}/", "timeout": "2000"}, None),
        ({**base, "host": f"amqp://guest:{s['policy']}@169.254.169.254/"}, Code.PERMISSION_DENIED),
        ({**base, "host": amqp, "username": "guest", "password": s["invalid"], "mode": "Bogus"}, Code.INVALID_ARGUMENT),
    ]


def pubsub_triggers(token_endpoint: str) -> tuple[list[tuple[dict[str, str], Code | None]], dict[str, str]]:
    closed, closed_secrets = service_account("key-closed-Hl42", f"http://127.0.0.1:{free_port()}/token")
    refused, refused_secrets = service_account("key-refused-Hm43", token_endpoint)
    broken, broken_secrets = service_account("key-broken-Hn44", token_endpoint, broken=True)
    policy, policy_secrets = service_account("key-policy-Hp45", "http://169.254.169.254/token")
    other_type = json.dumps({**json.loads(refused), "type": "external_account"})
    not_json = "{" + SECRETS["not_json"]
    base = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/orders",
    }
    triggers = [
        ({**base, "credentials": not_json}, Code.UNAUTHENTICATED),
        ({**base, "credentials": broken}, Code.UNAUTHENTICATED),
        ({**base, "credentials": closed}, Code.UNAVAILABLE),
        ({**base, "credentials": refused}, Code.UNAUTHENTICATED),
        ({**base, "credentials": policy}, Code.PERMISSION_DENIED),
        ({**base, "credentials": other_type}, Code.INVALID_ARGUMENT),
    ]
    return triggers, {**closed_secrets, **refused_secrets, **broken_secrets, **policy_secrets}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_broker_secret_leaves_the_scaler_on_any_failure_path(
    start_scaler: StartScaler, rabbitmq: RabbitBroker, token_endpoint: TokenEndpoint, log_format: str
) -> None:
    pubsub, key_secrets = pubsub_triggers(token_endpoint.url)
    secrets = {**SECRETS, **key_secrets}
    triggers = rabbit_triggers(rabbitmq) + pubsub
    scaler = start_scaler(
        log_level="DEBUG",
        log_format=log_format,
        cache_ttl=0.1,
        error_cache_ttl=0,
        push_interval=0.1,
        env=google_isolated_env(),
    )
    details: list[str] = []
    for metadata, expected in triggers:
        for call in (scaler.metrics, scaler.is_active):
            with pytest.raises(grpc.RpcError) as err:
                call(metadata)
            code = err.value.code()
            # A TLS handshake against a plain AMQP port ends as UNAVAILABLE or, if it hangs, the timeout.
            allowed = {expected} if expected else {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED}
            assert code in allowed, f"{metadata}: {code} {err.value.details()}"
            details.append(f"{code.name}: {err.value.details()} {err.value.debug_error_string()}")
    streams = [scaler.stream_is_active(metadata) for metadata, _ in triggers]
    for stream in streams:
        stream.ended.wait(0.3)  # the source errors are logged while the streams stay open
    for stream in streams:
        stream.cancel()
    metrics = scaler.metrics_text()
    scaler.stop()
    logs = scaler.logs()

    assert "source error, stream kept open" in logs
    assert token_endpoint.bodies, "the refusing token endpoint was reached"
    assert_no_secret("gRPC error details", "\n".join(details), secrets)
    assert_no_secret("/metrics", metrics, secrets)
    assert_no_secret(f"{log_format} logs at DEBUG", logs, secrets)


def scaled_object(triggers: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "orders-worker", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"name": "orders-worker"},
            "triggers": [{"type": "external", "name": f"t{i}", "metadata": m} for i, m in enumerate(triggers)],
        },
    }


def test_cli_output_carries_no_broker_secret(
    tmp_path: Path, rabbitmq: RabbitBroker, token_endpoint: TokenEndpoint
) -> None:
    pubsub, key_secrets = pubsub_triggers(token_endpoint.url)
    secrets = {**SECRETS, **key_secrets}
    triggers = [metadata for metadata, _ in rabbit_triggers(rabbitmq) + pubsub]
    manifest = tmp_path / "scaledobject.yaml"
    manifest.write_text(json.dumps(scaled_object(triggers)))
    env = google_isolated_env()
    for output in ("table", "json"):
        result = run_cli("check", str(manifest), "--local", "--timeout", "5", "-o", output, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        assert "t0" in result.stdout and "t15" in result.stdout, result.stdout + result.stderr
        assert_no_secret(f"scaler check -o {output}", result.stdout + result.stderr, secrets)

    connections = {
        "rabbit-url": {"adapter": "rabbitmq", "metadata": {"host": rabbitmq.amqp_host(password=SECRETS["amqp_url"])}},
        "rabbit-field": {
            "adapter": "rabbitmq",
            "metadata": {"host": "amqp://rabbitmq:5672/", "username": "u", "password": SECRETS["amqp_password"]},
        },
        "pubsub": {"adapter": "gcp-pubsub", "metadata": {"credentials": pubsub[3][0]["credentials"]}},
    }
    env = {**env, "SCALER_CONNECTIONS": json.dumps(connections)}
    for args in (["settings"], ["adapters"], ["adapters", "--format", "json"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert_no_secret(f"scaler {' '.join(args)}", result.stdout + result.stderr, secrets)
    broken = {**env, "SCALER_CONNECTIONS": json.dumps(connections)[:-3]}  # not valid JSON
    result = run_cli("serve", env=broken)
    assert result.returncode == 2 and result.stderr.startswith("scaler: "), result.stderr
    assert_no_secret("scaler serve with broken SCALER_CONNECTIONS", result.stdout + result.stderr, secrets)
