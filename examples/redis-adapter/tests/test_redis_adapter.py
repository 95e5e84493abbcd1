"""Redis-specific behaviour through a running scaler and a real gRPC channel, against a real Redis."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis
from conftest import RedisServer

from scaler.testing import RunningScaler


@pytest.fixture(scope="module")
def scaler() -> Iterator[RunningScaler]:
    process = RunningScaler(["--cache-ttl", "0.1", "--error-cache-ttl", "0.1"])
    yield process
    process.stop()


def list_trigger(server: RedisServer, key: str, **extra: str) -> dict[str, str]:
    return {"adapter": "redis", "address": server.address, "listName": key, **extra}


def stream_trigger(server: RedisServer, key: str, group: str, **extra: str) -> dict[str, str]:
    return {"adapter": "redis-streams", "address": server.address, "stream": key, "consumerGroup": group, **extra}


def status_of(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return call.code(), call.details()


def test_list_length_is_the_reading_and_its_target_is_list_length(
    scaler: RunningScaler, redis_server: RedisServer
) -> None:
    key = redis_server.unique_key("list")
    with redis_server.client() as client:
        client.rpush(key, *range(12))
    trigger = list_trigger(redis_server, key, listLength="4")
    [spec] = scaler.spec(trigger).metricSpecs
    assert spec.targetSizeFloat == 4
    assert spec.metricName.startswith("redis-")
    assert scaler.value(trigger) == 12


def test_missing_list_reads_zero_and_is_inactive(scaler: RunningScaler, redis_server: RedisServer) -> None:
    trigger = list_trigger(redis_server, redis_server.unique_key("absent"))
    assert scaler.value(trigger) == 0
    assert scaler.is_active(trigger) is False


def test_key_of_another_type_is_failed_precondition_naming_it(scaler: RunningScaler, redis_server: RedisServer) -> None:
    key = redis_server.unique_key("string")
    with redis_server.client() as client:
        client.set(key, "not a list")
    with pytest.raises(grpc.RpcError) as caught:
        scaler.metrics(list_trigger(redis_server, key))
    code, details = status_of(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert key in details


def test_database_index_selects_the_database(scaler: RunningScaler, redis_server: RedisServer) -> None:
    key = redis_server.unique_key("db")
    with redis.Redis(host=redis_server.host, port=redis_server.port, db=3) as client:
        client.rpush(key, "a", "b")
    try:
        assert scaler.value(list_trigger(redis_server, key, databaseIndex="3")) == 2
        assert scaler.value(list_trigger(redis_server, key)) == 0
    finally:
        with redis.Redis(host=redis_server.host, port=redis_server.port, db=3) as client:
            client.delete(key)


def test_stream_lag_counts_undelivered_entries_and_pending_counts_unacknowledged(
    scaler: RunningScaler, redis_server: RedisServer
) -> None:
    key = redis_server.unique_key("stream")
    with redis_server.client() as client:
        client.xgroup_create(key, "workers", id="$", mkstream=True)
        ids = [client.xadd(key, {"n": str(i)}) for i in range(9)]
        lag = stream_trigger(redis_server, key, "workers", lagCount="3")
        pending = stream_trigger(redis_server, key, "workers")
        assert scaler.value(lag) == 9
        assert scaler.value(pending) == 0
        assert scaler.spec(lag).metricSpecs[0].targetSizeFloat == 3
        assert scaler.spec(lag).metricSpecs[0].metricName != scaler.spec(pending).metricSpecs[0].metricName

        client.xreadgroup("workers", "w1", {key: ">"}, count=4)
        client.xack(key, "workers", ids[0])
    assert _eventually(lambda: scaler.value(lag) == 5)
    assert scaler.value(pending) == 3


def test_missing_consumer_group_is_not_found_naming_it(scaler: RunningScaler, redis_server: RedisServer) -> None:
    key = redis_server.unique_key("stream")
    with redis_server.client() as client:
        client.xadd(key, {"n": "1"})
    with pytest.raises(grpc.RpcError) as caught:
        scaler.metrics(stream_trigger(redis_server, key, "nobody"))
    code, details = status_of(caught.value)
    assert code == grpc.StatusCode.NOT_FOUND
    assert "nobody" in details and key in details


def test_missing_stream_is_not_found_naming_it(scaler: RunningScaler, redis_server: RedisServer) -> None:
    key = redis_server.unique_key("nostream")
    with pytest.raises(grpc.RpcError) as caught:
        scaler.metrics(stream_trigger(redis_server, key, "workers"))
    code, details = status_of(caught.value)
    assert code == grpc.StatusCode.NOT_FOUND
    assert key in details


def test_bad_address_is_invalid_argument_naming_the_key(scaler: RunningScaler) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        scaler.spec({"adapter": "redis", "address": "redis-without-port", "listName": "jobs"})
    code, details = status_of(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "address" in details and "host:port" in details


def test_many_lists_on_one_redis_share_one_pooled_client(redis_server: RedisServer) -> None:
    scaler = RunningScaler()  # its own, so no other test's endpoint is in its pool
    try:
        for i in range(6):
            key = redis_server.unique_key(f"shared{i}")
            with redis_server.client() as client:
                client.rpush(key, *range(i + 1))
            assert scaler.value(list_trigger(redis_server, key)) == i + 1
        metrics = httpx.get(f"http://127.0.0.1:{scaler.http_port}/metrics", timeout=5).text
    finally:
        scaler.stop()
    pooled = [line for line in metrics.splitlines() if line.startswith('scaler_pooled_clients{pool="redis-clients"}')]
    assert [float(line.rsplit(" ", 1)[1]) for line in pooled] == [1]


def test_wrong_password_is_unauthenticated_and_never_echoed(redis_with_password: RedisServer) -> None:
    wrong = "wrong-password-7c1e"
    scaler = RunningScaler()
    try:
        trigger = list_trigger(redis_with_password, "jobs", password=wrong)
        with pytest.raises(grpc.RpcError) as caught:
            scaler.metrics(trigger)
        code, details = status_of(caught.value)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "jobs" in details
        logs = scaler.logs()
        assert "UNAUTHENTICATED" in logs
    finally:
        scaler.stop()
    assert wrong not in details and wrong not in logs


def test_password_from_a_named_connection_reads_the_list(redis_with_password: RedisServer) -> None:
    key = redis_with_password.unique_key("list")
    with redis_with_password.client() as client:
        client.rpush(key, "a", "b", "c")
    config = Path(tempfile.mkdtemp(prefix="redis-conn-")) / "config.yaml"
    config.write_text(
        "connections:\n"
        "  jobs-redis:\n"
        "    adapter: redis\n"
        f"    metadata: {{address: '{redis_with_password.address}'}}\n"
        "    fromEnv: {password: JOBS_REDIS_PASSWORD}\n"
    )
    scaler = RunningScaler(["--config", str(config)], env={"JOBS_REDIS_PASSWORD": redis_with_password.password})
    try:
        assert scaler.value({"adapter": "redis", "connection": "jobs-redis", "listName": key}) == 3
        logs = scaler.logs()
    finally:
        scaler.stop()
        config.unlink()
        config.parent.rmdir()
    assert redis_with_password.password not in logs


def _eventually(check: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_enable_tls_reads_over_tls_and_verifies_the_certificate(redis_tls: RedisServer) -> None:
    key = redis_tls.unique_key("tls")
    with redis_tls.client() as client:
        client.rpush(key, "a", "b", "c", "d")
    scaler = RunningScaler(["--source-timeout", "3", "--trigger-file-dirs", os.path.dirname(redis_tls.ca_file)])
    try:
        trusted = list_trigger(redis_tls, key, enableTLS="true", caFile=redis_tls.ca_file)
        assert scaler.value(trusted) == 4
        assert scaler.value({**list_trigger(redis_tls, key, enableTLS="true"), "unsafeSsl": "true"}) == 4
        with pytest.raises(grpc.RpcError) as untrusted:
            scaler.metrics(list_trigger(redis_tls, key, enableTLS="true"))  # the test CA is not a system CA
        with pytest.raises(grpc.RpcError) as plaintext:
            scaler.metrics(list_trigger(redis_tls, key))
    finally:
        scaler.stop()
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate" in untrusted.value.details().lower()
    assert plaintext.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
