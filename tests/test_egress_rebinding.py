"""One host, checked once, connected to as checked: the egress check's answer is the connection's address.

A scripted DNS server (tests/fixtures/dns.py, TTL 0) is the scaler's resolver (`egress_nameservers`):
a name answers 127.0.0.1 to the first lookup and something else to the next. Loopback sources record
every request they get, so the tests see where the connections went, and the DNS server counts lookups:
one per reading, made by the check, none by the clients. The refused addresses are never connected to,
so nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from tests.fixtures._util import QuietHandler, free_port
from tests.fixtures.dns import ScriptedDns
from tests.fixtures.pubsub import PROJECT, google_isolated_env, service_account_key
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import StartScaler, denied, error_of


class RecordingSource:
    """A Prometheus query API (GET) and token endpoint (POST) on `host:port`; records every request's path."""

    def __init__(self, host: str, port: int, value: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self.paths: list[str] = []
        body = json.dumps(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]},
            }
        ).encode()
        paths = self.paths

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.reply(200, body)

            def do_POST(self) -> None:  # an OAuth token endpoint refusing the grant, as Google does a revoked key
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                paths.append(self.path)
                self.reply(400, b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}')

        self._server = ThreadingHTTPServer((host, port), Handler)
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sources() -> Iterator[tuple[int, RecordingSource, RecordingSource]]:
    """The same port on two loopback addresses: 127.0.0.1 answers 4, 127.0.0.2 answers 99."""
    port = free_port()
    near, far = RecordingSource("127.0.0.1", port, 4), RecordingSource("127.0.0.2", port, 99)
    yield port, near, far
    near.close()
    far.close()


def prom(server_address: str, query: str = "vector(4)") -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": server_address, "query": query, "threshold": "1"}


def test_rebinding_to_the_metadata_address_is_refused_and_the_victim_reads_on(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, _ = sources
    scripted_dns.answer("rebind.test", ["127.0.0.1"], ["169.254.169.254"])
    scaler = start_scaler(egress_nameservers=scripted_dns.address, error_cache_ttl=0)
    attacker = prom(f"http://rebind.test:{port}/")
    assert scaler.value(attacker, namespace="team-a") == 4
    assert scripted_dns.count("rebind.test") == 1  # the check looked it up; the client did not look again
    details = denied(lambda: scaler.metrics(prom(f"http://rebind.test:{port}/", "vector(5)"), namespace="team-a"))
    assert "host 'rebind.test'" in details and "serverAddress" in details and "169.254.169.254" in details
    assert scaler.value(prom(f"http://127.0.0.1:{port}/", "vector(6)"), namespace="team-b") == 4
    assert len(near.paths) == 2  # the attacker's first reading and the victim's


def test_a_lookup_that_never_answers_is_bounded_and_the_victim_reads_meanwhile(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, _ = sources
    scripted_dns.never_answer("silent.test")
    scaler = start_scaler(egress_nameservers=scripted_dns.address, egress_resolve_timeout=4)
    errors: list[grpc.RpcError] = []
    attacker = threading.Thread(
        target=lambda: errors.append(error_of(lambda: scaler.metrics(prom(f"http://silent.test:{port}/")))),
    )
    attacker.start()
    while scripted_dns.count("silent.test") == 0:
        time.sleep(0.05)
    started = time.monotonic()
    assert scaler.value(prom(f"http://127.0.0.1:{port}/"), namespace="team-b") == 4
    assert time.monotonic() - started < 2 and attacker.is_alive()  # answered while the lookup hangs
    attacker.join(30)
    [error] = errors
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "host 'silent.test'" in str(error.details()) and "within 4s" in str(error.details())
    assert len(near.paths) == 1


def test_the_connection_goes_to_the_approved_address_not_to_a_second_answer(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, far = sources
    # Only 127.0.0.1 is allowed: a client that resolved again would get 127.0.0.2 (answering 99) and use it.
    scripted_dns.answer("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
    scaler = start_scaler(egress_nameservers=scripted_dns.address, egress_allow="127.0.0.1/32", error_cache_ttl=0)
    assert scaler.value(prom(f"http://rebind.test:{port}/")) == 4
    assert (len(near.paths), far.paths, scripted_dns.count("rebind.test")) == (1, [], 1)
    details = denied(lambda: scaler.metrics(prom(f"http://rebind.test:{port}/", "vector(5)")))
    assert "host 'rebind.test'" in details and "127.0.0.2" in details and "not in egress_allow" in details
    assert far.paths == []


def test_a_nat64_answer_for_the_metadata_address_is_refused(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, _ = sources
    scripted_dns.answer("nat64.test", ["64:ff9b::a9fe:a9fe"], kind="AAAA")
    scripted_dns.answer("sixtofour.test", ["2002:a9fe:a9fe::1"], kind="AAAA")
    scaler = start_scaler(egress_nameservers=scripted_dns.address)
    for name, address in (("nat64.test", "64:ff9b::a9fe:a9fe"), ("sixtofour.test", "2002:a9fe:a9fe::1")):
        details = denied(lambda name=name: scaler.metrics(prom(f"http://{name}:{port}/")))
        assert f"host '{name}'" in details and address in details
    assert scaler.value(prom(f"http://127.0.0.1:{port}/")) == 4 and len(near.paths) == 1


def test_check_and_connection_agree_on_international_names(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, _ = sources
    scripted_dns.answer("ss.test", ["127.0.0.1"])
    scripted_dns.answer("xn--zca.test", ["127.0.0.1"])
    # IDNA 2003 (Python's codec) maps ß.test to ss.test; UTS-46 (what aiohttp connects to) to xn--zca.test.
    scaler = start_scaler(egress_nameservers=scripted_dns.address, egress_allow="ss.test")
    details = denied(lambda: scaler.spec(prom(f"http://ß.test:{port}/")))
    assert "host 'xn--zca.test'" in details and "not in egress_allow" in details
    assert scaler.value(prom(f"http://ss.test:{port}/")) == 4
    open_scaler = start_scaler(egress_nameservers=scripted_dns.address)
    assert open_scaler.value(prom(f"http://ß.test:{port}/", "vector(7)")) == 4
    assert scripted_dns.count("xn--zca.test") == 1 and scripted_dns.count("ss.test") == 1
    assert len(near.paths) == 2


def test_a_host_that_does_not_normalise_is_invalid_naming_the_key(start_scaler: StartScaler) -> None:
    scaler = start_scaler()
    for host in ("\u2488.test", "a\u200db.test", "xn--zz.test", "%31%32%37.0.0.1"):
        error = error_of(lambda host=host: scaler.spec(prom(f"http://{host}:9090/")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "serverAddress" in str(error.details())


CLIMBING_PATHS = (
    "/tenant-a/../tenant-b",
    "/tenant-a/%2e%2e/tenant-b",
    "/tenant-a/%2E%2e/tenant-b",
    "/tenant-a/.%2E/tenant-b",
    "/tenant-a/..%2ftenant-b",
    "/tenant-a%2f..%2ftenant-b",
    "/tenant-a%2F%2E%2E%2Ftenant-b",
    "/tenant-a/%252e%252e/tenant-b",  # for a server that decodes twice
    "/tenant-a/..\\tenant-b",
    "/tenant-a/./",
)


def test_dot_segments_in_any_encoding_cannot_climb_out_of_a_url_prefix(
    start_scaler: StartScaler, sources: tuple[int, RecordingSource, RecordingSource]
) -> None:
    port, near, _ = sources
    scaler = start_scaler(egress_allow=f"http://127.0.0.1:{port}/tenant-a/")
    for path in CLIMBING_PATHS:
        for call in (scaler.spec, scaler.metrics):
            error = error_of(lambda call=call, path=path: call(prom(f"http://127.0.0.1:{port}{path}")))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, error.details())
            assert "serverAddress" in str(error.details()) and "dot segment" in str(error.details())
    # The victim's own prefix answers; an unreserved escape means its character (yarl sends it decoded).
    assert scaler.value(prom(f"http://127.0.0.1:{port}/tenant-a/")) == 4
    assert scaler.value(prom(f"http://127.0.0.1:{port}/tenant-%61/", "vector(5)")) == 4
    assert len(near.paths) == 2 and all(p.startswith("/tenant-a/api/v1/query?") for p in near.paths)


def test_amqp_connects_to_the_approved_address_with_the_name_kept(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, rabbitmq: RabbitBroker
) -> None:
    queue, other = rabbitmq.declare("pinned"), rabbitmq.declare("pinned")
    rabbitmq.publish(queue, 4)
    scripted_dns.answer("rabbit.test", ["127.0.0.1"], ["169.254.169.254"])
    scripted_dns.answer("xn--zca.test", ["127.0.0.1"])
    scaler = start_scaler(egress_nameservers=scripted_dns.address, error_cache_ttl=0)
    broker = f"@{rabbitmq.host}:"

    def trigger(host: str, queue_name: str = queue) -> dict[str, str]:
        address = rabbitmq.amqp_host().replace(broker, f"@{host}:")
        return {"adapter": "rabbitmq", "host": address, "queueName": queue_name, "mode": "QueueLength", "value": "5"}

    assert scaler.value(trigger("rabbit.test"), namespace="team-a") == 4
    assert scripted_dns.count("rabbit.test") == 1
    details = denied(lambda: scaler.metrics(trigger("rabbit.test", other), namespace="team-a"))
    assert "host 'rabbit.test'" in details and "169.254.169.254" in details
    # The UTS-46 name, looked up once by the check; the IDNA 2003 spelling is never asked for.
    assert scaler.value(trigger("ß.test"), namespace="team-b") == 4
    assert scripted_dns.count("xn--zca.test") == 1 and "ss.test" not in scripted_dns.names()


def test_the_token_request_of_an_inline_key_goes_to_the_approved_address(
    start_scaler: StartScaler, scripted_dns: ScriptedDns, tmp_path: Path
) -> None:
    # The key's signed assertion goes to its token_uri, a host the ScaledObject chose, over https only
    # (adapters/auth): a token endpoint for token.test whose certificate the scaler trusts (SSL_CERT_FILE).
    cert, key_file = tmp_path / "token.crt", tmp_path / "token.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=token.test",
         "-addext", "subjectAltName=DNS:token.test", "-keyout", str(key_file), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key_file)
    port = free_port()
    near, far = RecordingSource("127.0.0.1", port, 4, context), RecordingSource("127.0.0.2", port, 99, context)
    scripted_dns.answer("token.test", ["127.0.0.1"], ["127.0.0.2"])
    key, _ = service_account_key("key-pinned-1", f"https://token.test:{port}/token")
    env = google_isolated_env(SSL_CERT_FILE=str(cert))
    scaler = start_scaler(egress_nameservers=scripted_dns.address, env=env)
    metadata = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/pinned-sub",
        "credentials": key,
    }
    error = error_of(lambda: scaler.metrics(metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert (near.paths, far.paths, scripted_dns.count("token.test")) == (["/token"], [], 1)
    near.close()
    far.close()
