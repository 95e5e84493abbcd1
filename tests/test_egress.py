"""Egress policy: addresses from trigger metadata are checked before any connection is made.

End to end through a real scaler and a real Prometheus; nothing here sends a packet off 127.0.0.1
(forbidden addresses are refused before connecting, and allowed link-local ones are only used for
GetMetricSpec, which never connects).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest

from scaler.egress import EgressPolicy, HostRule, is_forbidden_ip, normal_path, parse_destination, parse_rule
from tests.fixtures._secrets import run_cli
from tests.fixtures._util import free_port
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import ScalerProcess, StartScaler, denied, ref


def prom(server_address: str, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": server_address, "query": "vector(4)", "threshold": "1", **extra}


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("http://169.254.169.254/computeMetadata/v1/", "169.254.169.254"),
        ("http://[fe80::1]:9090", "fe80::1"),
        ("http://metadata.google.internal/", "metadata.google.internal"),
        ("http://METADATA/", "metadata"),
        ("http://2852039166/", "2852039166"),  # 169.254.169.254 written as one number
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
        # Embedded IPv4: a NAT64 gateway, 6to4 relay or tunnel delivers these to 169.254.169.254.
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe"),  # NAT64 well-known prefix
        ("http://[64:ff9b:1:a9fe:a9:fe00::]/", "64:ff9b:1:a9fe:a9:fe00::"),  # NAT64 local-use /48
        ("http://[2002:a9fe:a9fe::]/", "2002:a9fe:a9fe::"),  # 6to4
        ("http://[::169.254.169.254]/", "::169.254.169.254"),  # IPv4-compatible
        ("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", "2001:0:4136:e378:8000:63bf:5601:5601"),  # Teredo
        ("http://[fd00::5efe:a9fe:a9fe]/", "fd00::5efe:a9fe:a9fe"),  # ISATAP
    ],
)
def test_link_local_and_metadata_addresses_are_permission_denied_naming_the_host(
    scaler: ScalerProcess, address: str, host: str
) -> None:
    for call in (lambda: scaler.spec(prom(address)), lambda: scaler.metrics(prom(address))):
        details = denied(call)
        assert f"host '{host}'" in details and "serverAddress" in details


def test_a_link_local_address_named_in_egress_allow_is_accepted(start_scaler: StartScaler) -> None:
    scaler = start_scaler(egress_allow="169.254.169.254/32")
    # GetMetricSpec only: it never connects, and this test must not send anything off the machine.
    assert scaler.spec(prom("http://169.254.169.254/")).metricSpecs[0].targetSizeFloat == 1
    details = denied(lambda: scaler.spec(prom("http://169.254.170.2/")))
    assert "169.254.170.2" in details


def test_a_broad_cidr_does_not_open_link_local_addresses(start_scaler: StartScaler) -> None:
    scaler = start_scaler(egress_allow="0.0.0.0/0")
    assert "169.254.169.254" in denied(lambda: scaler.spec(prom("http://169.254.169.254/")))


@pytest.fixture
def counting_listener() -> Iterator[tuple[int, list[int]]]:
    """A loopback TCP port that counts the connections it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join()
    listener.close()


def test_address_outside_the_allow_list_is_refused_before_any_connection(
    start_scaler: StartScaler, counting_listener: tuple[int, list[int]]
) -> None:
    port, accepted = counting_listener
    scaler = start_scaler(egress_allow="10.0.0.0/8,prometheus.monitoring")
    for call in (
        lambda: scaler.metrics(prom(f"http://127.0.0.1:{port}")),
        lambda: scaler.is_active(prom(f"http://127.0.0.1:{port}")),
    ):
        assert "host '127.0.0.1'" in denied(call)
    stream = scaler.stream_is_active(prom(f"http://127.0.0.1:{port}"))
    stream.ended.wait(10)
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert accepted == []


def test_allow_list_admits_url_prefixes_and_cidrs(start_scaler: StartScaler, prometheus: PrometheusServer) -> None:
    scaler = start_scaler(egress_allow=f"{prometheus.url}/,192.168.0.0/16")
    assert scaler.value(prom(prometheus.url)) == 4
    other = f"http://127.0.0.1:{free_port()}"
    assert "not in egress_allow" in denied(lambda: scaler.spec(prom(other)))
    # A prefix is matched on the parsed URL, on path-segment boundaries, not as a string.
    tenant = start_scaler(egress_allow=f"{prometheus.url}/tenant-a")
    assert "not in egress_allow" in denied(lambda: tenant.spec(prom(f"{prometheus.url}/tenant-ab")))
    assert tenant.spec(prom(f"{prometheus.url}/tenant-a/")).metricSpecs
    cidr = start_scaler(egress_allow="127.0.0.0/8")
    assert cidr.value(prom(prometheus.url)) == 4


def test_host_names_are_resolved_and_must_land_in_an_allowed_cidr(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    port = prometheus.url.rsplit(":", 1)[1]
    by_name = f"http://localhost:{port}"
    allowed = start_scaler(egress_allow="127.0.0.0/8,::1/128")
    assert allowed.value(prom(by_name)) == 4
    refused = start_scaler(egress_allow="10.0.0.0/8")
    # The name itself is not refused at spec time: only what it resolves to is known to be outside.
    assert refused.spec(prom(by_name)).metricSpecs
    details = denied(lambda: refused.metrics(prom(by_name)))
    assert "host 'localhost'" in details and "resolves to" in details


NAMED = """
connections:
  team-prom:
    adapter: prometheus
    metadata: {{serverAddress: "{url}"}}
    namespaces: [team-a]
"""


def test_only_named_connections_when_inline_addresses_are_forbidden(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    scaler = start_scaler(allow_inline_addresses="false", config=NAMED.format(url=prometheus.url))
    via_connection = {"adapter": "prometheus", "connection": "team-prom", "query": "vector(4)", "threshold": "1"}
    assert scaler.value(via_connection, namespace="team-a") == 4
    for metadata in (prom(prometheus.url), {**via_connection, "connection": "", "serverAddressFromEnv": "http://x"}):
        details = denied(lambda metadata=metadata: scaler.spec(metadata, namespace="team-a"))
        assert "'serverAddress'" in details and "named connection" in details


def test_named_connection_is_refused_to_other_namespaces(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    scaler = start_scaler(config=NAMED.format(url=prometheus.url))
    metadata = {"adapter": "prometheus", "connection": "team-prom", "query": "vector(4)", "threshold": "1"}
    assert scaler.value(metadata, namespace="team-a") == 4
    for call in (
        lambda: scaler.spec(metadata, namespace="team-b"),
        lambda: scaler.metrics(metadata, namespace="team-b"),
        lambda: scaler.is_active(metadata, namespace="team-b"),
    ):
        assert "namespace 'team-b'" in denied(call)
    stream = scaler.stub.StreamIsActive(ref(metadata, namespace="team-b"))
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stream))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_bad_egress_allow_entry_stops_the_server_with_a_message_naming_it() -> None:
    result = run_cli("serve", "--egress-allow", "10.0.0.0/8,http://user:pw@prom:9090", timeout=30)
    assert result.returncode == 2
    assert "egress_allow" in result.stderr and "userinfo" in result.stderr
    assert "pw@" not in result.stderr


def test_a_bad_egress_nameservers_entry_stops_the_server_with_a_message_naming_it() -> None:
    result = run_cli("serve", "--egress-nameservers", "10.0.0.10,dns.example:53", timeout=30)
    assert result.returncode == 2
    assert "egress_nameservers" in result.stderr and "dns.example:53" in result.stderr


# --- the policy's pure parts: rule syntax and literal forms of addresses ----------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("fe80::1", "fe80::1"),
        ("prometheus.monitoring", None),
        ("deadbeef", None),
    ],
)
def test_ip_literals_are_recognised_in_every_form_the_resolver_accepts(host: str, expected: str | None) -> None:
    netloc = f"[{host}]" if ":" in host else host
    ip = parse_destination("serverAddress", f"http://{netloc}/").ip
    assert ip == (ipaddress.ip_address(expected) if expected else None)


@pytest.mark.parametrize("entry", ["", "http://u:p@h", "*", "a b", "http://h:99999", "*.*.svc"])
def test_malformed_allow_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="egress_allow entry"):
        parse_rule(entry)


def test_wildcard_host_entries_match_subdomains_only() -> None:
    policy = EgressPolicy(["*.monitoring.svc"])
    assert policy.check(parse_destination("k", "http://prom.monitoring.svc:9090")).pending == "forbidden_only"
    for host in ("monitoring.svc", "evilmonitoring.svc", "prom.monitoring.svc.evil.com"):
        with pytest.raises(Exception, match="not in egress_allow"):
            policy.check(parse_destination("k", f"http://{host}/"))


def test_a_name_resolving_to_link_local_is_refused() -> None:
    policy = EgressPolicy()
    checked = policy.check(parse_destination("host", "amqp://rabbit.internal:5672/"))
    policy.check_addresses(checked, [ipaddress.ip_address("10.1.2.3")])
    with pytest.raises(Exception, match=r"resolves to the link-local address 169\.254\.169\.254"):
        policy.check_addresses(checked, [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("169.254.169.254")])


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("64:ff9b::a9fe:a9fe", True),  # NAT64, well-known prefix
        ("64:ff9b:1:a9fe:a9:fe00::", True),  # NAT64 local-use, /48 embedding (skips the "u" octet)
        ("64:ff9b:1::a9fe:a9fe", True),  # NAT64 local-use, /96 embedding
        ("2002:a9fe:a9fe::1", True),  # 6to4
        ("::a9fe:a9fe", True),  # IPv4-compatible
        ("2001:0:4136:e378:8000:63bf:5601:5601", True),  # Teredo client (stored inverted)
        ("fd00::200:5efe:a9fe:a9fe", True),  # ISATAP
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1: an ordinary address
        ("2002:a00:1::1", False),
        ("::1", False),
        ("2001:db8::a9fe:a9fe", False),  # the same low bits without an embedding prefix
    ],
)
def test_embedded_ipv4_forms_of_link_local_addresses_are_forbidden(address: str, forbidden: bool) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(address)) is forbidden


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/tenant-%61/api", "/tenant-a/api"), ("/a%2Fb", "/a%2Fb"), ("/%7Euser/", "/~user/"), ("/", "/")],
)
def test_url_paths_are_normalised_for_prefix_rules(path: str, normal: str) -> None:
    assert normal_path(path) == normal


def test_international_hosts_are_normalised_as_yarl_does() -> None:
    from yarl import URL

    for host in ("ß.example", "BÜCHER.example", "faß.de", "ΣΑΣ.gr"):
        assert parse_destination("k", f"http://{host}/").host == URL(f"http://{host}/").raw_host
    rule = parse_rule("bücher.example")
    assert isinstance(rule, HostRule) and rule.host == "xn--bcher-kva.example"
