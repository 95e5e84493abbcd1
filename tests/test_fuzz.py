"""Fuzzing every RPC over a real channel: random metadata maps, names and raw request bytes.

Whatever arrives, the answer is a deliberate status (never UNKNOWN or INTERNAL), the server stays SERVING,
logs no traceback, and its memory stays bounded. Every address the fuzzer can produce points at
127.0.0.1 or is refused before connecting (link-local, metadata names, malformed): no traffic leaves
this machine, and no random text is ever used as a host name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures._util import free_port
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import ScalerProcess

METADATA_EXAMPLES = 1800
RAW_EXAMPLES = 1200
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
RPCS = ("GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive", "StreamMetricSpec")
STREAM_DEADLINE = 0.1  # a stream still open by then (source failing: it stays open) has passed: the client ends it
# Unary calls are cheap, a stream costs up to STREAM_DEADLINE: weigh the draw towards unary calls.
RPC_DRAW = ("GetMetricSpec", "GetMetrics", "IsActive") * 3 + ("StreamIsActive", "StreamMetricSpec")
RSS_GROWTH_LIMIT = 64 * 1024 * 1024
FUZZ_CONNECTION = "fuzz-prom"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


outcomes: Counter[str] = Counter()


@pytest.fixture(scope="module")
def target(
    prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ScalerProcess, PrometheusServer]]:
    # The tenant limits are part of what is fuzzed: a low metadata cap that the huge strings cross, a
    # connection only some namespaces may use, and the scaler's own identity for one namespace only.
    config = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    config.write_text(
        "connections:\n"
        f"  {FUZZ_CONNECTION}:\n"
        "    adapter: prometheus\n"
        f"    metadata: {{serverAddress: '{prometheus.url}'}}\n"
        "    namespaces: [team-a]\n"
        "ambient_credentials_namespaces: [team-a]\n"
    )
    fast = ["--source-timeout", "0.5", "--cache-ttl", "0.2", "--error-cache-ttl", "0.2", "--push-interval", "0.2"]
    scaler = ScalerProcess([*fast, "--max-metadata-bytes", "16384", "--config", str(config)])
    yield scaler, prometheus
    scaler.stop()


# --- strategies ---------------------------------------------------------------------------------

short_text = st.text(max_size=40)
huge_text = st.text(min_size=5_000, max_size=20_000, alphabet=st.characters(codec="utf-8"))
odd_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e",
        "💥" * 50,
        "0",
        "-1",
        "1e309",
        "-1e309",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e-320",
        "9" * 400,
    ]
)
any_text = st.one_of(short_text, odd_strings, huge_text)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    odd_strings,
    short_text,
)
booleans = st.one_of(st.sampled_from(["true", "false", "TRUE", "1", "0", "yes", ""]), short_text)
pairs = st.lists(st.tuples(short_text, short_text), max_size=4).map(lambda kv: ",".join(f"{k}={v}" for k, v in kv))
# Paths on this machine only, never devices that never end (/dev/zero) or kernel files.
paths = st.one_of(
    st.sampled_from(["", "/nonexistent/ca.pem", "/etc/hostname", "pyproject.toml", "/tmp", "."]),
    st.text(alphabet="abc./_-", max_size=20),
)


def addresses(prometheus_url: str) -> st.SearchStrategy[str]:
    closed = free_port()
    fixed = st.sampled_from(
        [
            prometheus_url,
            prometheus_url + "/",
            f"http://127.0.0.1:{closed}",
            f"https://127.0.0.1:{closed}",
            f"http://user:pw@127.0.0.1:{closed}/",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:abc",
            "http://[::1]:1",
            "http://[::1",
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://metadata.google.internal/",
            "ftp://127.0.0.1/",
            "127.0.0.1:9090",
            "http://",
            "http://:80",
            "",
            "   ",
        ]
    )
    # Random text only after a fixed loopback origin (path, query, fragment), never as a host.
    suffixed = st.builds(lambda tail: f"{prometheus_url}/{tail}", any_text)
    return st.one_of(fixed, suffixed)


def metadata_maps(prometheus_url: str) -> st.SearchStrategy[dict[str, str]]:
    address = addresses(prometheus_url)
    known: dict[str, st.SearchStrategy[str]] = {
        "adapter": st.one_of(st.sampled_from(["prometheus", "PROMETHEUS", "rabbitmq", "gcp-pubsub", "nope"]), any_text),
        "serverAddress": address,
        "serverAddressFromEnv": address,
        "query": st.one_of(
            st.sampled_from(["vector(1)", "up", "sum(", "vector(NaN)", "vector(-5)", "x[1m]"]), any_text
        ),
        "queryFromEnv": any_text,
        "threshold": numbers,
        "activationThreshold": numbers,
        "namespace": any_text,
        "queryParameters": st.one_of(pairs, any_text),
        "customHeaders": st.one_of(pairs, any_text),
        "ignoreNullValues": booleans,
        "aggregation": st.one_of(st.sampled_from(["sum", "max", "min", "avg"]), short_text),
        "unsafeSsl": booleans,
        "timeout": numbers,
        "authModes": st.one_of(st.sampled_from(["basic", "bearer", "custom", "tls", "basic,bearer"]), short_text),
        "username": any_text,
        "password": any_text,
        "passwordFromEnv": any_text,
        "bearerToken": any_text,
        "customAuthHeader": any_text,
        "customAuthValue": any_text,
        "caFile": paths,
        "certFile": paths,
        "keyFile": paths,
        "connection": st.one_of(st.sampled_from(["nope", FUZZ_CONNECTION]), short_text),
        "onSourceError": st.one_of(st.sampled_from(["fail", "lastKnown"]), short_text),
        "maxStaleness": st.one_of(st.sampled_from(["1s", "5m", "250ms", "-1s", "1e400h"]), short_text),
        "scalerAddress": any_text,
        "enableTLS": booleans,
    }
    unknown_keys = st.text(max_size=30).filter(lambda k: k not in known and not k.startswith("serverAddress"))
    random_keys = st.fixed_dictionaries({}, optional=known)
    # Half the maps start from a working trigger and change some keys, so the fuzzer gets past parsing often.
    working = {"adapter": "prometheus", "serverAddress": prometheus_url, "query": "vector(2)", "threshold": "1"}
    few_changes = st.lists(st.sampled_from(sorted(known)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: known[key] for key in keys})
    )
    mutated = st.builds(lambda changes: {**working, **changes}, few_changes)
    extra = st.dictionaries(unknown_keys, any_text, max_size=4)
    return st.builds(lambda base, more: {**more, **base}, st.one_of(random_keys, mutated), extra)


# --- calls ----------------------------------------------------------------------------------------


def call_rpc(scaler: ScalerProcess, rpc: str, ref: Any, metric_name: str) -> grpc.StatusCode:
    stub = scaler.stub
    try:
        if rpc == "GetMetrics":
            stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name), timeout=10)
        elif rpc in ("GetMetricSpec", "IsActive"):
            getattr(stub, rpc)(ref, timeout=10)
        else:
            read_first(getattr(stub, rpc)(ref, timeout=STREAM_DEADLINE))
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def read_first(call: Any) -> None:
    """A stream's first message (or its error), then cancel it, as KEDA does when a ScaledObject goes away."""
    for _ in call:
        call.cancel()
        return


def test_random_metadata_names_and_namespaces_on_every_rpc(target: tuple[ScalerProcess, PrometheusServer]) -> None:
    scaler, prometheus = target
    rss_before = warm_up(scaler, prometheus)

    @fuzz_settings(METADATA_EXAMPLES)
    @given(
        metadata=metadata_maps(prometheus.url),
        rpc=st.sampled_from(RPC_DRAW),
        name=any_text,
        namespace=st.one_of(st.sampled_from(["team-a", "team-b"]), any_text),
        metric_name=short_text,
    )
    def fuzz(metadata: dict[str, str], rpc: str, name: str, namespace: str, metric_name: str) -> None:
        ref = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)
        code = call_rpc(scaler, rpc, ref, metric_name)
        outcomes[f"metadata {code.name}"] += 1
        assert code not in FORBIDDEN, f"{rpc} answered {code.name} for {metadata!r}"

    fuzz()
    assert_still_healthy(scaler, rss_before)


def test_random_bytes_as_request_bodies_on_every_rpc(target: tuple[ScalerProcess, PrometheusServer]) -> None:
    scaler, prometheus = target
    rss_before = warm_up(scaler, prometheus)
    channel = scaler.channel
    unary = {rpc: channel.unary_unary(f"/externalscaler.ExternalScaler/{rpc}") for rpc in RPCS[:3]}
    streams = {rpc: channel.unary_stream(f"/externalscaler.ExternalScaler/{rpc}") for rpc in RPCS[3:]}
    valid = pb.ScaledObjectRef(
        name="n", namespace="ns", scalerMetadata={"adapter": "prometheus", "serverAddress": prometheus.url}
    ).SerializeToString()

    @fuzz_settings(RAW_EXAMPLES)
    @given(
        rpc=st.sampled_from(RPC_DRAW),
        body=st.one_of(
            st.binary(max_size=2048),
            # Near-valid messages: a real ScaledObjectRef with bytes flipped, cut or appended.
            st.builds(lambda cut, tail: valid[:cut] + tail, st.integers(0, len(valid)), st.binary(max_size=64)),
        ),
    )
    def fuzz(rpc: str, body: bytes) -> None:
        try:
            if rpc in unary:
                unary[rpc](body, timeout=10)
            else:
                read_first(streams[rpc](body, timeout=STREAM_DEADLINE))
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        outcomes[f"bytes {code.name}"] += 1
        assert code not in FORBIDDEN, f"{rpc} answered {code.name} for body {body!r}"

    fuzz()
    assert_still_healthy(scaler, rss_before)
    total = sum(outcomes.values())
    print(f"\nfuzz: {total} cases; outcomes: {dict(sorted(outcomes.items()))}")


def warm_up(scaler: ScalerProcess, prometheus: PrometheusServer) -> int:
    """Exercise every path once so lazily built things (clients, caches) exist before measuring memory."""
    metadata = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(1)", "threshold": "1"}
    for rpc in RPCS:
        call_rpc(scaler, rpc, pb.ScaledObjectRef(name="warm", namespace="up", scalerMetadata=metadata), "")
    return int(psutil.Process(scaler.proc.pid).memory_info().rss)


def assert_still_healthy(scaler: ScalerProcess, rss_before: int) -> None:
    status = scaler.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert scaler.proc.poll() is None
    assert "scaler_grpc_requests_total" in scaler.metrics_text()  # /metrics still renders every label
    rss_after = psutil.Process(scaler.proc.pid).memory_info().rss
    growth = rss_after - rss_before
    print(f"\nRSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
    logs = scaler.logs()
    assert "Traceback" not in logs and "failed unexpectedly" not in logs, logs[-3000:]
