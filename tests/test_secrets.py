"""No secret in logs (DEBUG included), gRPC error details, /metrics or `scaler` CLI output, on every failure path.

Known secrets go in every place a user puts them (password, URL userinfo, bearer token, customHeaders,
customAuthValue, named connections from a file and from env); then every failure the Prometheus adapter
can hit is driven through a real scaler against real servers, and everything that leaves the process is
searched for the secrets.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import grpc
import pytest

from tests.fixtures._certs import CertificateAuthority
from tests.fixtures._secrets import assert_no_secret, run_cli
from tests.fixtures._util import free_port
from tests.fixtures.prometheus import Exporter, PrometheusServer, start_prometheus
from tests.fixtures.scaler import StartScaler

SECRETS = {
    "password": "pw-basic-Zq81",
    "url": "pw-url-Kx92",
    "url_encoded": "pc%40t-Wq64",
    "url_decoded": "pc@t-Wq64",
    "bearer": "tok-bearer-Yt73",
    "header": "hdr-apikey-Vb55",
    "custom": "custom-auth-Nm44",
    "file": "file-secret-Qp19",
    "env": "env-secret-Lm27",
    "tls": "pw-tls-Cc18",
    "gone": "pw-gone-Dd29",
    "slow": "pw-slow-Ee30",
    "policy": "pw-policy-Ff41",
}


def assert_clean(where: str, text: str) -> None:
    assert_no_secret(where, text, SECRETS)


@pytest.fixture(scope="module")
def guarded_prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus that requires basic auth (user keda, a password no test sends)."""
    exporter = Exporter()
    hashed = bcrypt.hashpw(b"the-right-one", bcrypt.gensalt(rounds=4)).decode()
    server = start_prometheus(exporter, web_config=f"basic_auth_users:\n  keda: '{hashed}'\n")
    yield server
    server.stop()
    exporter.close()


@pytest.fixture(scope="module")
def untrusted_tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS server whose certificate comes from a CA the scaler does not trust."""
    directory = tmp_path_factory.mktemp("untrusted")
    cert, key = CertificateAuthority("nobody-trusts-me").issue("localhost", server=True).write(directory, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()  # the client rejects our certificate: expected

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture(scope="module")
def odd_ports(untrusted_tls_port: int) -> Iterator[tuple[int, int]]:
    """The untrusted TLS port, and a port that accepts TCP connections and never answers (the slow path)."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield untrusted_tls_port, listener.getsockname()[1]
    listener.close()


CONFIG = """
connections:
  from-file:
    adapter: prometheus
    metadata: {{serverAddress: "{url}", username: keda}}
    fromFile: {{password: "{password_file}"}}
  from-env:
    adapter: prometheus
    metadata: {{serverAddress: "{url}"}}
    fromEnv: {{bearerToken: PROM_TEST_TOKEN}}
"""


def failing_triggers(prom: str, tls_port: int, slow_port: int) -> list[dict[str, str]]:
    base = {"adapter": "prometheus", "query": "vector(1)", "threshold": "1", "serverAddress": prom}
    host = prom.removeprefix("http://")
    s = SECRETS
    return [
        {**base, "username": "keda", "password": s["password"]},
        {**base, "serverAddress": f"http://keda:{s['url']}@{host}"},
        {**base, "serverAddress": f"http://keda:{s['url_encoded']}@{host}"},
        {**base, "bearerToken": s["bearer"]},
        {**base, "customHeaders": f"X-Api-Key={s['header']},Authorization=Bearer {s['header']}"},
        {**base, "authModes": "custom", "customAuthHeader": "X-Token", "customAuthValue": s["custom"]},
        {**base, "serverAddress": f"http://keda:{s['gone']}@127.0.0.1:{free_port()}"},
        {**base, "serverAddress": f"https://keda:{s['tls']}@{host}"},  # TLS to a plain-HTTP port
        {**base, "serverAddress": f"https://127.0.0.1:{tls_port}", "username": "keda", "password": s["tls"]},
        {**base, "serverAddress": f"http://keda:{s['slow']}@127.0.0.1:{slow_port}", "timeout": "200"},
        {**base, "serverAddress": f"http://keda:{s['policy']}@169.254.169.254/"},
        {**base, "threshold": "not-a-number", "password": s["password"], "username": "keda"},
        {"adapter": "prometheus", "connection": "from-file", "query": "vector(1)", "threshold": "1"},
        {"adapter": "prometheus", "connection": "from-env", "query": "vector(1)", "threshold": "1"},
    ]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_leaves_the_scaler_on_any_failure_path(
    start_scaler: StartScaler,
    guarded_prometheus: PrometheusServer,
    odd_ports: tuple[int, int],
    tmp_path: Path,
    log_format: str,
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(SECRETS["file"] + "\n")
    scaler = start_scaler(
        log_level="DEBUG",
        log_format=log_format,
        cache_ttl=0.1,
        error_cache_ttl=0,
        push_interval=0.1,
        config=CONFIG.format(url=guarded_prometheus.url, password_file=password_file),
        env={"PROM_TEST_TOKEN": SECRETS["env"]},
    )
    details: list[str] = []
    codes: set[grpc.StatusCode] = set()
    triggers = failing_triggers(guarded_prometheus.url, *odd_ports)
    for metadata in triggers:
        for call in (scaler.metrics, scaler.is_active):
            with pytest.raises(grpc.RpcError) as err:
                call(metadata)
            codes.add(err.value.code())
            details.append(f"{err.value.code().name}: {err.value.details()} {err.value.debug_error_string()}")
    assert codes == {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }, "every failure path was reached"
    streams = [scaler.stream_is_active(metadata) for metadata in triggers[:10]]
    for stream in streams:
        stream.ended.wait(0.5)  # the source errors are logged while the streams stay open
    for stream in streams:
        stream.cancel()
    metrics = scaler.metrics_text()
    scaler.stop()
    logs = scaler.logs()

    assert "source error, stream kept open" in logs and "UNAUTHENTICATED" in "".join(details)
    assert "never retrieved" not in logs
    assert_clean("gRPC error details", "\n".join(details))
    assert_clean("/metrics", metrics)
    assert_clean(f"{log_format} logs at DEBUG", logs)


def test_cli_output_carries_no_secret(tmp_path: Path) -> None:
    s = SECRETS
    connections = (
        f'{{"c": {{"adapter": "prometheus", "metadata": {{"serverAddress": "http://keda:{s["url"]}@p:9090", '
        f'"password": "{s["password"]}"}}, "fromEnv": {{"bearerToken": "PROM_TEST_TOKEN"}}}}}}'
    )
    env = {"SCALER_CONNECTIONS": connections, "PROM_TEST_TOKEN": s["env"]}
    for args in (["settings"], ["adapters"], ["adapters", "--format", "json"], ["adapters", "--format", "markdown"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert_clean(f"scaler {' '.join(args)}", result.stdout + result.stderr)

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        f'connections:\n  c:\n    adapter: prometheus\n    metadata: {{password: "{s["password"]}", serverAddress: '
        f"http://keda:{s['url']}@p:9090\n"
    )
    missing_secret_file = tmp_path / "missing.yaml"
    missing_secret_file.write_text(
        "connections:\n  c:\n    adapter: prometheus\n"
        f"    fromFile: {{password: {tmp_path / 'no-such-file'}}}\n"
        f"    metadata: {{bearerToken: {s['bearer']}, serverAddress: 'http://keda:{s['url']}@p:9090'}}\n"
    )
    wrong_type = tmp_path / "wrong-type.yaml"
    wrong_type.write_text(f"cache_ttl: {s['password']}\nlog_level: {s['bearer']}\n")
    failures = [
        (["serve", "--config", str(bad_yaml)], {}),
        (["serve", "--config", str(missing_secret_file)], {}),
        (["serve", "--config", str(wrong_type)], {}),
        (["serve", "--grpc-address", f"{s['password']}:not-a-port"], {}),
        (["serve", "--egress-allow", f"http://keda:{s['url']}@p:9090"], {}),
        (["serve"], {"SCALER_CONNECTIONS": connections[:-5]}),  # not valid JSON
        (["serve"], {"SCALER_CONNECTIONS": connections.replace("PROM_TEST_TOKEN", "UNSET_VAR")}),
    ]
    for args, extra_env in failures:
        result = run_cli(*args, env=extra_env)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert output.startswith("scaler: ") and "Traceback" not in output, output
        assert_clean(f"scaler {' '.join(args)}", output)


def test_a_trigger_password_cannot_censor_the_log(
    start_scaler: StartScaler, guarded_prometheus: PrometheusServer
) -> None:
    # Whoever writes a ScaledObject picks its "secrets"; picking the namespace's name must not hide it in the log.
    scaler = start_scaler()
    metadata = {
        "adapter": "prometheus",
        "serverAddress": guarded_prometheus.url,
        "query": "vector(1)",
        "threshold": "1",
        "username": "keda",
        "password": "payments-prod",
    }
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(metadata, namespace="payments-prod", name="checkout")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    scaler.stop()
    assert '"namespace": "payments-prod"' in scaler.logs()
