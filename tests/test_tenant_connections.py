"""Two tenants on one scaler: a named connection grants exactly what the operator wrote, to the namespaces it
names; refusals tell a tenant nothing about other tenants; the scaler's own cloud identity is opt-in per
namespace; metadata size is bounded before anything is parsed or cached.

The source is a loopback server speaking Prometheus' query API that records every request's headers and
query parameters, so each test checks independently what the connection's credentials were sent with.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import grpc
import psutil
import pytest

from scaler.triggers import TriggerParser
from tests.fixtures._util import LoopbackHttpServer, QuietHandler
from tests.fixtures.pubsub import google_isolated_env
from tests.fixtures.scaler import ScalerProcess, StartScaler, denied, error_of, ref

TOKEN = "operator-token-7f3a9c1e55"  # the operator's bearer token, held by the connection only


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    params: list[tuple[str, str]]


@dataclass
class RecordingPrometheus:
    """Answers every instant query with 7 and records what it was asked, and how."""

    server: LoopbackHttpServer
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url

    def with_token(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.headers.get("authorization") == f"Bearer {TOKEN}"]


@pytest.fixture
def recording_prometheus() -> Iterator[RecordingPrometheus]:
    recorder: RecordingPrometheus

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            with recorder.lock:
                recorder.requests.append(
                    Recorded(parts.path, {k.lower(): v for k, v in self.headers.items()}, parse_qsl(parts.query))
                )
            result = [{"metric": {}, "value": [0, "7"]}]
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
            self.reply(200, json.dumps(body).encode())

    server = LoopbackHttpServer(Handler)
    recorder = RecordingPrometheus(server)
    yield recorder
    server.close()


@pytest.fixture
def two_tenants(start_scaler: StartScaler, recording_prometheus: RecordingPrometheus) -> ScalerProcess:
    config = f"""
connections:
  metrics:
    adapter: prometheus
    metadata: {{serverAddress: "{recording_prometheus.url}"}}
    fromEnv: {{bearerToken: METRICS_TOKEN}}
    namespaces: [team-a, team-b]
  headers-allowed:
    adapter: prometheus
    metadata: {{serverAddress: "{recording_prometheus.url}"}}
    fromEnv: {{bearerToken: METRICS_TOKEN}}
    namespaces: [team-a]
    triggerKeys: [customHeaders]
  team-a-only:
    adapter: prometheus
    metadata: {{serverAddress: "not a url at all", query: "secret_team_a_metric"}}
    namespaces: [team-a]
"""
    return start_scaler(config=config, env={"METRICS_TOKEN": TOKEN}, cache_ttl=0.2, error_cache_ttl=0.2)


def via(connection: str, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "connection": connection, "query": "up", "threshold": "1", **extra}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("customHeaders", "X-Scope-OrgID=team-b"),
        ("unsafeSsl", "true"),
        ("namespace", "team-b"),
        ("queryParameters", "tenant=team-b"),
        ("authModes", "basic"),
        ("username", "someone"),
        ("caFile", "/etc/ssl/certs/ca-certificates.crt"),
        ("serverAddress", "http://127.0.0.1:9"),
    ],
)
def test_a_connection_lends_nothing_but_its_credentials_for_the_object(
    two_tenants: ScalerProcess, recording_prometheus: RecordingPrometheus, key: str, value: str
) -> None:
    attack = via("metrics", **{key: value})
    for call in (
        lambda: two_tenants.spec(attack, namespace="team-a"),
        lambda: two_tenants.metrics(attack, namespace="team-a"),
        lambda: two_tenants.is_active(attack, namespace="team-a"),
    ):
        details = denied(call)
        assert f"'{key}'" in details and "metrics" in details
    assert recording_prometheus.requests == [], "nothing may be sent for a refused trigger"
    # The victim, on the same connection, is served, and the token travels only with the operator's settings.
    assert two_tenants.value(via("metrics"), namespace="team-b") == 7
    sent = recording_prometheus.with_token()
    assert len(sent) == 1
    assert "x-scope-orgid" not in sent[0].headers and sent[0].params == [("query", "up")]


def test_keys_the_operator_grants_may_be_added(
    two_tenants: ScalerProcess, recording_prometheus: RecordingPrometheus
) -> None:
    metadata = via("headers-allowed", customHeaders="X-Scope-OrgID=team-a")
    assert two_tenants.value(metadata, namespace="team-a") == 7
    (sent,) = recording_prometheus.with_token()
    assert sent.headers["x-scope-orgid"] == "team-a"
    # Granting one key grants only that key.
    assert "'namespace'" in denied(lambda: two_tenants.spec({**metadata, "namespace": "x"}, namespace="team-a"))


def test_object_and_target_keys_and_unsafe_ssl_false_are_allowed(
    two_tenants: ScalerProcess, recording_prometheus: RecordingPrometheus
) -> None:
    metadata = via(
        "metrics", activationThreshold="3", ignoreNullValues="false", timeout="2000", unsafeSsl="false", query="q1"
    )
    assert two_tenants.value(metadata, namespace="team-a") == 7
    assert two_tenants.is_active(metadata, namespace="team-a") is True
    assert {tuple(r.params) for r in recording_prometheus.with_token()} == {(("query", "q1"),)}


def test_namespace_is_checked_before_anything_else_and_refusals_leak_nothing(two_tenants: ScalerProcess) -> None:
    # team-a-only has a broken serverAddress: team-b must not learn that, nor who may use it.
    forbidden = denied(lambda: two_tenants.spec(via("team-a-only"), namespace="team-b"))
    unknown = denied(lambda: two_tenants.spec(via("no-such-connection"), namespace="team-b"))
    for details in (forbidden, unknown):
        for leak in ("team-a'", "serverAddress", "not a url", "secret_team_a_metric", "metrics", "headers-allowed"):
            assert leak not in details, f"{leak!r} leaked in {details!r}"
    # Unknown and forbidden look the same: the name is the only difference.
    assert forbidden.replace("team-a-only", "X") == unknown.replace("no-such-connection", "X")
    streams = two_tenants.stub.StreamIsActive(ref(via("team-a-only"), namespace="team-b"), timeout=5)
    assert error_of(lambda: list(streams)).code() == grpc.StatusCode.PERMISSION_DENIED
    # The allowed namespace gets the real problem, naming the key.
    own = {"adapter": "prometheus", "connection": "team-a-only", "threshold": "1"}
    err = error_of(lambda: two_tenants.spec(own, namespace="team-a"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "serverAddress" in err.details()


def test_metadata_over_the_size_limit_is_refused_before_parsing_and_memory_stays_flat(
    start_scaler: StartScaler, recording_prometheus: RecordingPrometheus
) -> None:
    scaler = start_scaler(max_metadata_bytes=16384)
    victim = {"adapter": "prometheus", "serverAddress": recording_prometheus.url, "query": "up", "threshold": "1"}
    assert scaler.value(victim, namespace="team-b") == 7
    rss_before = psutil.Process(scaler.proc.pid).memory_info().rss
    stop = threading.Event()
    refused: list[str] = []

    def attack() -> None:
        n = 0
        while not stop.is_set() and n < 250:
            n += 1
            huge = {**victim, "query": f"up{n}", "padding": "x" * 850_000}
            try:
                scaler.spec(huge, namespace="team-a")
            except grpc.RpcError as exc:
                refused.append(f"{exc.code().name}: {exc.details()}")

    attacker = threading.Thread(target=attack)
    attacker.start()
    victim_latencies = []
    while attacker.is_alive():
        started = time.monotonic()
        assert scaler.value(victim, namespace="team-b") == 7
        victim_latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    attacker.join()
    stop.set()
    assert len(refused) == 250
    assert all(r.startswith("INVALID_ARGUMENT") and "max_metadata_bytes" in r and "16384" in r for r in refused)
    assert max(victim_latencies) < 2.0
    growth = psutil.Process(scaler.proc.pid).memory_info().rss - rss_before
    worst = max(victim_latencies) * 1000
    print(f"\n250 refused 850 KB triggers: RSS {growth / 2**20:+.1f} MiB, victim max {worst:.0f} ms")
    assert growth < 60 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB for refused metadata"
    # Nothing refused was parsed: no warning about the unknown `padding` key of those triggers.
    assert "padding" not in scaler.logs()


def test_the_scalers_own_cloud_identity_is_opt_in_per_namespace(start_scaler: StartScaler) -> None:
    scaler = start_scaler(ambient_credentials_namespaces="team-a", env=google_isolated_env(), cache_ttl=0.2)
    ambient = {"adapter": "gcp-pubsub", "subscriptionName": "projects/my-project/subscriptions/orders", "value": "5"}
    details = denied(lambda: scaler.spec(ambient, namespace="team-b"))
    assert "ambient_credentials_namespaces" in details and "team-b" in details and "team-a" not in details
    assert "team-a" not in denied(lambda: scaler.metrics(ambient, namespace="team-b"))
    # The namespace that may use it gets a spec: the identity is only used when a reading is taken.
    assert scaler.spec(ambient, namespace="team-a").metricSpecs[0].targetSizeFloat == 5


def test_by_default_any_namespace_may_use_the_ambient_identity_as_in_keda(start_scaler: StartScaler) -> None:
    scaler = start_scaler(env=google_isolated_env())
    ambient = {"adapter": "gcp-pubsub", "subscriptionName": "projects/my-project/subscriptions/orders", "value": "5"}
    assert scaler.spec(ambient, namespace="anyone").metricSpecs[0].targetSizeFloat == 5


def test_secrets_are_registered_only_for_valid_triggers() -> None:
    from adapters.api import SECRETS, AdapterContext
    from adapters.registry import AdapterRegistry

    parser = TriggerParser(AdapterRegistry(AdapterContext()), {}, 5.0, 100)
    invalid = {"adapter": "prometheus", "serverAddress": "http://127.0.0.1:9", "password": "never-valid-9f2c3b1a"}
    with pytest.raises(Exception, match="query"):
        parser.parse(invalid, "team-a")
    assert SECRETS.redact("never-valid-9f2c3b1a") == "never-valid-9f2c3b1a", "registered though refused"
    valid = {**invalid, "query": "up", "threshold": "1", "username": "u", "password": "is-valid-9f2c3b1a"}
    parser.parse(valid, "team-a")
    assert SECRETS.redact("is-valid-9f2c3b1a") == "***"


def test_credentials_from_env_file_is_confined_like_a_path(start_scaler: StartScaler, tmp_path: Path) -> None:
    # The operator's pod holds another team's key path in a variable: naming the variable must not lend it.
    other_team_key = tmp_path / "team-a-key.json"
    other_team_key.write_text("{}")
    scaler = start_scaler(env=google_isolated_env(TEAM_A_KEY=str(other_team_key)))
    trigger = {
        "adapter": "gcp-pubsub",
        "subscriptionName": "projects/my-project/subscriptions/orders",
        "credentialsFromEnvFile": "TEAM_A_KEY",
    }
    refused = denied(lambda: scaler.spec(trigger, namespace="team-b"))
    unset = denied(lambda: scaler.spec({**trigger, "credentialsFromEnvFile": "NO_SUCH_VAR"}, namespace="team-b"))
    assert "'credentialsFromEnvFile'" in refused and "trigger_file_dirs" in refused
    assert str(other_team_key) not in refused
    assert refused == unset, "set and unset variables must look the same to a tenant"
