"""Bounded work per call: no answer, page count, key spelling or secret count lets one trigger cost the others.

Hostile sources are loopback stand-ins speaking the real protocols (Prometheus' /api/v1/query, RabbitMQ's
/api/queues paging) that count what they receive; the scaler is the real process over gRPC; the vhost
test runs on the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import random
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import grpc
import psutil
import pytest

from adapters.api import AdapterContext, parse_metadata
from adapters.prometheus import MAX_SERIES, PrometheusAdapter
from adapters.rabbitmq import RabbitMQAdapter
from adapters.rabbitmq_http import MAX_PAGES, MAX_QUEUES
from adapters.redaction import SecretRegistry
from adapters.sources import SourceKey, credentials_identity
from scaler.cache import MeasurementCache
from scaler.logs import JsonFormatter
from scaler.metrics import ScalerMetrics
from scaler.push import PushHub
from tests.fixtures._util import LoopbackHttpServer, QuietHandler, wait_for
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import ScalerProcess, StartScaler

MIB = 1024 * 1024
HEADER_VALUE = "hdr-value-7f3a91c2"
PARAM_VALUE = "param-value-55e1d0a9"


def small_series(count: int) -> bytes:
    """A Prometheus vector answer of `count` of the smallest series there are (~30 bytes each)."""
    result = ",".join(['{"metric":{},"value":[1,"1"]}'] * count)
    return f'{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}'.encode()


@pytest.fixture(scope="module")
def hostile_prometheus() -> Iterator[str]:
    """/declared: 16 MiB of small series with its Content-Length; /streamed: the same, length unknown;
    /many: 10,001 series in ~300 KB, under the byte cap."""
    huge, many = small_series(16 * MIB // 30), small_series(MAX_SERIES + 1)

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.0"  # no length for /streamed: the body runs until the connection closes

        def do_GET(self) -> None:
            if self.path.startswith("/many/"):
                self.reply(200, many)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path.startswith("/declared/"):
                self.send_header("Content-Length", str(len(huge)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the scaler hung up at its limit
                self.wfile.write(huge)

    server = LoopbackHttpServer(Handler)
    yield server.url
    server.close()


def prom(address: str, query: str = "up", **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": address, "query": query, "threshold": "1", **extra}


def code_and_details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), str(err.details())
    return grpc.StatusCode.OK, ""


def while_attacking(attack: Callable[[], object], victim: Callable[[], float], rounds: int = 6) -> list[float]:
    """The victim's readings and latencies, taken while `attack` runs again and again on another thread."""
    stop = threading.Event()

    def attack_until_stopped() -> int:
        count = 0
        while not stop.is_set():
            attack()
            count += 1
        return count

    with ThreadPoolExecutor(1) as pool:
        attacks = pool.submit(attack_until_stopped)
        try:
            readings = []
            for _ in range(rounds):
                started = time.monotonic()
                readings.append(victim())
                assert time.monotonic() - started < 2, "the victim's call waited behind the attacker's"
        finally:
            stop.set()
        assert attacks.result() >= 1
    return readings


# --- Prometheus answers ----------------------------------------------------------------------------------


def test_a_huge_prometheus_answer_is_refused_at_the_cap_while_others_are_served(
    start_scaler: StartScaler, hostile_prometheus: str, prometheus: PrometheusServer
) -> None:
    scaler = start_scaler(error_cache_ttl=0)
    process = psutil.Process(scaler.proc.pid)
    victim = prom(prometheus.url, "vector(4)")
    assert scaler.value(victim) == 4
    before = process.memory_info().rss
    outcomes: list[tuple[grpc.StatusCode, str]] = []
    paths = iter(range(1_000_000))

    def attack() -> None:
        n = next(paths)
        path = "declared" if n % 2 else "streamed"
        outcomes.append(code_and_details(lambda: scaler.metrics(prom(f"{hostile_prometheus}/{path}/{n}"))))

    assert while_attacking(attack, lambda: scaler.value(victim)) == [4.0] * 6
    assert outcomes and {code for code, _ in outcomes} == {grpc.StatusCode.UNAVAILABLE}
    assert all("more than the 1 MiB limit" in details for _, details in outcomes), outcomes[0]
    # Parsed whole, one such answer took 200+ MB (bench/bounded_work.py); refused at 1 MiB it takes little.
    assert process.memory_info().rss - before < 40 * MIB


def test_an_answer_with_more_series_than_the_cap_is_invalid_naming_the_limit(
    scaler: ScalerProcess, hostile_prometheus: str
) -> None:
    code, details = code_and_details(lambda: scaler.metrics(prom(f"{hostile_prometheus}/many/1", aggregation="sum")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{MAX_SERIES + 1} series, more than the limit of {MAX_SERIES:,}" in details and "'query'" in details


# --- RabbitMQ management paging ----------------------------------------------------------------------------


class ManagementStandIn:
    """RabbitMQ's /api/queues/<vhost>?page=&page_size=&use_regex=true paging, answering per vhost:

    float: `page_count: 1e9`; huge: 10**9 pages; growing: always one more page than asked for; crowded: 600
    queues a page over 20 pages; fine: 3 pages of 2 queues with 1 message each. Counts requests per vhost.
    """

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        lock = threading.Lock()
        stand_in = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                vhost = unquote(parts.path.removeprefix("/api/queues/"))
                page = int(parse_qs(parts.query)["page"][0])
                with lock:
                    stand_in.requests[vhost] = stand_in.requests.get(vhost, 0) + 1
                self.reply(200, stand_in.page(vhost, page))

        self.server = LoopbackHttpServer(Handler)
        self.url = self.server.url

    @staticmethod
    def page(vhost: str, page: int) -> bytes:
        def body(count: Any, items: int) -> bytes:
            queues = [{"name": f"q{page}-{i}", "messages": 1, "messages_ready": 1} for i in range(items)]
            text = json.dumps({"page": page, "page_count": 0, "items": queues})
            return text.replace('"page_count": 0', f'"page_count": {count}').encode()

        answers = {"float": ("1e9", 1), "huge": (10**9, 1), "growing": (page + 1, 1), "crowded": (20, 600)}
        return body(*answers.get(vhost, (3, 2)))

    def trigger(self, vhost: str) -> dict[str, str]:
        return {
            "adapter": "rabbitmq",
            "host": f"{self.url}/{quote(vhost, safe='')}",
            "queueName": ".*",
            "useRegex": "true",
            "mode": "QueueLength",
            "value": "1",
            "timeout": "20000",
        }


@pytest.fixture
def management() -> Iterator[ManagementStandIn]:
    stand_in = ManagementStandIn()
    yield stand_in
    stand_in.server.close()


def test_a_page_count_that_is_not_an_integer_costs_one_request(
    scaler: ScalerProcess, management: ManagementStandIn
) -> None:
    code, details = code_and_details(lambda: scaler.metrics(management.trigger("float")))
    assert code == grpc.StatusCode.UNAVAILABLE and "page_count" in details
    assert management.requests["float"] == 1


def test_a_hostile_page_count_is_refused_naming_the_limit_and_bounds_requests(
    scaler: ScalerProcess, management: ManagementStandIn
) -> None:
    victim = management.trigger("fine")
    outcomes: dict[str, tuple[grpc.StatusCode, str]] = {}
    rounds: list[int] = []

    def attack() -> None:
        rounds.append(1)
        for vhost in ("huge", "growing", "crowded"):
            outcomes[vhost] = code_and_details(lambda v=vhost: scaler.metrics(management.trigger(v)))  # type: ignore[misc]

    assert while_attacking(attack, lambda: scaler.value(victim), rounds=3) == [6.0] * 3
    huge, growing, crowded = outcomes["huge"], outcomes["growing"], outcomes["crowded"]
    assert huge[0] == growing[0] == crowded[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert f"more than the limit of {MAX_PAGES} pages per reading" in huge[1] and "useRegex" in huge[1]
    assert f"more than the limit of {MAX_PAGES} pages per reading" in growing[1]
    assert f"more than the limit of {MAX_QUEUES:,} queues per reading" in crowded[1]
    # One request per refused reading, or at most MAX_PAGES when the broker lies page by page.
    assert management.requests["huge"] == len(rounds)
    assert management.requests["growing"] == MAX_PAGES * len(rounds)
    assert management.requests["crowded"] <= MAX_PAGES * len(rounds)
    assert management.requests["fine"] >= 3


# --- source keys ---------------------------------------------------------------------------------------------


@pytest.fixture
def slashed_vhosts(rabbitmq: RabbitBroker) -> Iterator[tuple[str, str]]:
    """Vhosts `<base>/b` holding queue `c` (2 messages) and `<base>` holding queue `b/c` (5 messages)."""
    base = f"bounded-{uuid.uuid4().hex[:8]}"
    vhosts = (f"{base}/b", base)
    for vhost in vhosts:
        rabbitmq.api("PUT", f"vhosts/{quote(vhost, safe='')}").raise_for_status()
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        rabbitmq.api("PUT", f"permissions/{quote(vhost, safe='')}/{rabbitmq.user}", json=permissions)
    for vhost, queue, count in ((vhosts[0], "c", 2), (vhosts[1], "b/c", 5)):
        rabbitmq.channel(vhost).queue_declare(queue)
        rabbitmq.publish(queue, count, vhost)
        path = f"queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        # The management API's counts lag the broker by its stats interval.
        wait_for(lambda p=path, n=count: rabbitmq.api("GET", p).json().get("messages") == n, 30, f"{path}: {count}")  # type: ignore[misc]
    yield vhosts
    for vhost in vhosts:
        rabbitmq.api("DELETE", f"vhosts/{quote(vhost, safe='')}")


def test_vhost_and_queue_spellings_that_join_alike_are_two_readings(
    start_scaler: StartScaler, rabbitmq: RabbitBroker, slashed_vhosts: tuple[str, str]
) -> None:
    scaler = start_scaler(cache_ttl=60)  # a shared key would hand the second trigger the first one's reading
    outer_b, outer = slashed_vhosts
    for host in (rabbitmq.amqp_host("/"), rabbitmq.http_host("/")):
        base = {"adapter": "rabbitmq", "host": host, "mode": "QueueLength", "value": "1"}
        assert scaler.value({**base, "vhostName": outer_b, "queueName": "c"}) == 2
        assert scaler.value({**base, "vhostName": outer, "queueName": "b/c"}) == 5


def test_every_adapters_key_keeps_scope_and_object_apart() -> None:
    def key(vhost: str, queue: str) -> SourceKey:
        adapter = RabbitMQAdapter(AdapterContext())
        metadata = {"host": "amqp://h:5672", "vhostName": vhost, "queueName": queue}
        return adapter.source_key(parse_metadata(adapter.metadata_model, metadata))

    assert key("a/b", "c") != key("a", "b/c")
    assert key("a/b", "c") == key("a/b", "c")
    # Pub/Sub paths are made of names that cannot hold '/'; credentials digests must not join either.
    assert credentials_identity("user\x00pass", "word") != credentials_identity("user", "pass\x00word")


# --- option values in logs and task names -------------------------------------------------------------------


def prometheus_key() -> SourceKey:
    adapter = PrometheusAdapter(AdapterContext())
    metadata = prom(
        "http://prometheus.monitoring:9090",
        customHeaders=f"X-Scope-OrgID={HEADER_VALUE}",
        queryParameters=f"api_key={PARAM_VALUE}",
    )
    metadata.pop("adapter")
    return adapter.source_key(parse_metadata(adapter.metadata_model, metadata))


def test_a_source_key_shows_option_names_and_a_digest_never_their_values() -> None:
    key = prometheus_key()
    for text in (str(key), repr(key)):
        assert HEADER_VALUE not in text and PARAM_VALUE not in text
        assert "headers" in text and "params" in text and key.options_digest in text
    other = dataclasses.replace(key, options=(("headers", "X-Scope-OrgID=b"),))
    assert str(other) != str(key), "keys that differ only in option values must read differently"


def test_poller_task_names_and_unexpected_failure_logs_hold_no_option_value() -> None:
    key = prometheus_key()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("scaler").addHandler(handler)

    async def broken() -> float:
        raise RuntimeError("the adapter broke")

    async def body() -> list[str]:
        metrics = ScalerMetrics(60)
        cache = MeasurementCache(0.0, 0.0, metrics)
        hub = PushHub(cache, 0.05, metrics)
        async with hub.watch(key, broken, 1.0) as updates:
            names = [task.get_name() for task in asyncio.all_tasks()]
            async for _ in updates:
                break
        await hub.close()
        return names

    try:
        names = asyncio.run(body())
    finally:
        logging.getLogger("scaler").removeHandler(handler)
    assert any(name.startswith("poller prometheus:") for name in names), names
    assert not [name for name in names if HEADER_VALUE in name or PARAM_VALUE in name]
    logged = stream.getvalue()
    assert "failed unexpectedly" in logged and "headers" in logged
    assert HEADER_VALUE not in logged and PARAM_VALUE not in logged


def test_header_values_stay_out_of_the_scalers_debug_log(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    scaler = start_scaler(log_level="DEBUG", error_cache_ttl=0)
    options = {"customHeaders": f"X-Scope-OrgID={HEADER_VALUE}", "queryParameters": f"api_key={PARAM_VALUE}"}
    good, bad = prom(prometheus.url, "vector(3)", **options), prom("http://127.0.0.1:9", **options)
    assert scaler.value(good) == 3
    stream = scaler.stream_is_active(good)
    assert stream.next().result is True
    assert code_and_details(lambda: scaler.metrics(bad))[0] == grpc.StatusCode.UNAVAILABLE
    failing = scaler.stream_is_active(bad)
    time.sleep(1)
    stream.cancel()
    failing.cancel()
    scaler.stop()
    logs = scaler.logs()
    assert "stream kept open" in logs  # the failing stream was logged, with its context
    assert HEADER_VALUE not in logs and PARAM_VALUE not in logs


# --- redaction -----------------------------------------------------------------------------------------------


def random_secrets(count: int, seed: int = 15) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 40))) for _ in range(count)]


def test_every_secret_is_removed_with_ten_thousand_registered() -> None:
    registry = SecretRegistry()
    secrets = random_secrets(10_000)
    registry.add(*secrets)
    assert len(registry) == 10_000
    shown = random.Random(1).sample(secrets, 200)
    text = " | ".join(f"key={s}" for s in shown)
    redacted = registry.redact(text)
    assert not [s for s in shown if s in redacted]
    assert redacted.count("***") == 200 and redacted.count("key=") == 200


def test_overlapping_secrets_leave_no_character_of_either() -> None:
    registry = SecretRegistry()
    registry.add("abcdefghij", "hijklmnopq")
    assert registry.redact("x abcdefghijklmnopq y") == "x *** y"
    assert registry.redact("abcdefghijabcdefghij") == "***"  # touching occurrences


def test_a_secret_containing_another_is_removed_whole() -> None:
    registry = SecretRegistry()
    registry.add("password", "password-longer-1", "password-longer")
    assert registry.redact("a password-longer-1 b password-longer c password d") == "a *** b *** c *** d"


def test_short_values_are_not_secrets_and_the_oldest_are_evicted_first() -> None:
    from adapters import redaction

    registry = SecretRegistry()
    registry.add("team-a", "")
    assert registry.redact("team-a") == "team-a"
    secrets = random_secrets(redaction._MAX_SECRETS + 10, seed=3)
    registry.add(*secrets)
    assert len(registry) == redaction._MAX_SECRETS
    assert secrets[0] in registry.redact(secrets[0]) and registry.redact(secrets[-1]) == "***"


def test_redaction_is_consistent_while_other_threads_add_secrets() -> None:
    registry = SecretRegistry()
    known = random_secrets(500, seed=7)
    registry.add(*known)
    text = " ".join(known[:50])
    failures: list[str] = []

    def add(seed: int) -> None:
        for secret in random_secrets(2_000, seed=seed):
            registry.add(secret)

    def read() -> None:
        for _ in range(200):
            if any(s in registry.redact(text) for s in known[:50]):
                failures.append("a registered secret survived")

    threads = [threading.Thread(target=add, args=(s,)) for s in (8, 9)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(registry) == 4_500
