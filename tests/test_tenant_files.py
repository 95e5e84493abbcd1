"""Files are the operator's: a trigger names a file only inside `trigger_file_dirs`, and no file stalls anyone.

End to end through real scalers (two tenants: `team-a` attacks, `team-b` reads its Prometheus by host name,
so each of its calls also goes through the egress check's DNS lookup) over FIFOs, devices, directories,
symlinks and oversized files made by the test. The last test drives the file executor in-process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from adapters import files
from adapters.api import SourceUnavailable, discover_adapter_classes
from tests.fixtures._secrets import run_cli
from tests.fixtures.certs import Pki
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.pubsub import google_isolated_env
from tests.fixtures.scaler import ScalerProcess, denied, error_of

ATTACKER, VICTIM = "team-a", "team-b"
CONNECTIONS = """
connections:
  zero-credentials:
    adapter: gcp-pubsub
    metadata: {credentialsFile: /dev/zero}
  urandom-ca:
    adapter: prometheus
    metadata: {serverAddress: "%(prometheus)s", caFile: /dev/urandom}
  operator-ca:
    adapter: prometheus
    metadata: {serverAddress: "%(prometheus)s", caFile: "%(ca)s"}
"""


@dataclass
class Tree:
    allowed: Path
    outside: Path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Tree:
    allowed, outside = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("outside")
    os.mkfifo(allowed / "fifo")
    (allowed / "dir").mkdir()
    (allowed / "link-to-fifo").symlink_to(allowed / "fifo")
    (allowed / "link-to-link").symlink_to("link-to-fifo")
    (outside / "other-team-key.json").write_text('{"type": "service_account"}')
    (allowed / "link-outside").symlink_to(outside / "other-team-key.json")
    (allowed / "link-outside-missing").symlink_to(outside / "missing.json")
    (allowed / "huge.pem").write_bytes(b"#" * (files.MAX_TLS_BYTES + 1))
    shutil.copy(pki.ca, allowed / "ca.pem")
    return Tree(allowed, outside)


def _scaler(args: list[str], tmp: Path, prometheus: PrometheusServer) -> ScalerProcess:
    config = tmp / "config.yaml"
    shutil.copy(Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")), tmp / "ca.pem")
    config.write_text(CONNECTIONS % {"prometheus": prometheus.url, "ca": tmp / "ca.pem"})
    return ScalerProcess([*args, "--config", str(config), "--source-timeout", "3"], google_isolated_env())


@pytest.fixture(scope="module")
def scaler(
    tree: Tree, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScalerProcess]:
    process = _scaler(["--trigger-file-dirs", str(tree.allowed)], tmp_path_factory.mktemp("cfg"), prometheus)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def default_scaler(prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScalerProcess]:
    process = _scaler([], tmp_path_factory.mktemp("cfg"), prometheus)
    yield process
    process.stop()


def prom(prometheus: PrometheusServer, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(6)", "threshold": "1", **extra}


def pubsub(**extra: str) -> dict[str, str]:
    return {"adapter": "gcp-pubsub", "source": "monitoring", "subscriptionName": "projects/team-a-1/subscriptions/jobs",
            **extra}  # fmt: skip


def amqps(**extra: str) -> dict[str, str]:
    # Nothing listens there: the file is read (and refused) before any connection is tried.
    return {"adapter": "rabbitmq", "host": "amqps://127.0.0.1:1/", "queueName": "jobs", "mode": "QueueLength",
            "value": "1", **extra}  # fmt: skip


def unusable(call: Callable[[], object]) -> str:
    """A call refused because of the file (FAILED_PRECONDITION); its details."""
    error = error_of(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    return str(error.details())


def test_without_trigger_file_dirs_every_tenant_path_is_refused_alike(
    default_scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree
) -> None:
    existing = denied(lambda: default_scaler.metrics(prom(prometheus, caFile=str(tree.allowed / "ca.pem"))))
    missing = denied(lambda: default_scaler.metrics(prom(prometheus, caFile=str(tree.allowed / "nope.pem"))))
    assert existing == missing and "'caFile'" in existing
    key = denied(lambda: default_scaler.metrics(pubsub(credentialsFile=str(tree.outside / "other-team-key.json"))))
    assert "'credentialsFile'" in key and "other-team-key" not in key
    # Also when the value comes from the ScaledObject's environment (xFromEnv).
    assert "'keyFile'" in denied(lambda: default_scaler.spec(amqps(keyFileFromEnv="/etc/hostname")))


@pytest.mark.parametrize(
    "path",
    [
        "/etc/hostname",
        "{outside}/other-team-key.json",
        "{allowed}/../{outside_name}/other-team-key.json",
        "{allowed}/link-outside",
        "relative/ca.pem",
        "/dev/zero",
        "/dev/urandom",
    ],
)
def test_a_path_outside_the_allowed_dirs_gets_the_same_refusal_whether_or_not_it_exists(
    scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree, path: str
) -> None:
    names = {"allowed": tree.allowed, "outside": tree.outside, "outside_name": tree.outside.name}
    existing = path.format(**names)
    missing = {
        "/etc/hostname": "/etc/no-such-hostname",
        "/dev/zero": "/dev/no-such-device",
        "/dev/urandom": "/dev/no-such-device",
        "{allowed}/link-outside": "{allowed}/link-outside-missing",
    }.get(path, path.replace("other-team-key", "missing").replace("ca.pem", "missing.pem")).format(**names)

    def refusal(path: str) -> str:
        return denied(lambda: scaler.metrics(prom(prometheus, caFile=path), namespace=ATTACKER))

    refusals = {refusal(existing), refusal(missing)}
    assert len(refusals) == 1, refusals
    refusal = refusals.pop()
    assert "metadata key 'caFile'" in refusal and str(tree.outside) not in refusal and "exist" not in refusal


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("fifo", "not a regular file"),
        ("dir", "not a regular file"),
        ("link-to-link", "not a regular file"),
        ("huge.pem", "it is larger than"),
        ("missing.pem", "does not exist"),
    ],
)
def test_an_unusable_file_inside_the_allowed_dirs_is_refused_naming_the_key(
    scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree, name: str, reason: str
) -> None:
    path = str(tree.allowed / name)

    def refusal(metadata: dict[str, str]) -> str:
        return unusable(lambda: scaler.metrics(metadata, namespace=ATTACKER))

    for details, key in ((refusal(prom(prometheus, caFile=path)), "caFile"), (refusal(amqps(caFile=path)), "caFile"),
                         (refusal(pubsub(credentialsFile=path)), "credentialsFile")):  # fmt: skip
        assert f"metadata key '{key}'" in details and reason in details, details
        assert path not in details


def test_an_allowed_ca_file_is_used(scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree) -> None:
    # An http:// source ignores the CA, but the context is built from it: a good file passes.
    assert scaler.value(prom(prometheus, caFile=f"{tree.allowed}//./ca.pem"), namespace=VICTIM) == 6


def test_a_named_connection_may_name_files_anywhere(
    scaler: ScalerProcess, default_scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    operator = {"adapter": "prometheus", "connection": "operator-ca", "query": "vector(6)", "threshold": "1"}
    assert scaler.value(operator, namespace=VICTIM) == 6
    assert default_scaler.value(operator, namespace=VICTIM) == 6


def test_an_encrypted_key_is_refused_naming_it(
    scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree, pki: Pki
) -> None:
    crt, key = pki.issue("tenant-encrypted", server=False)
    encrypted = tree.allowed / "encrypted.key"
    subprocess.run(["openssl", "rsa", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.copy(crt, tree.allowed / "tenant.crt")
    metadata = prom(prometheus, certFile=str(tree.allowed / "tenant.crt"), keyFile=str(encrypted))
    details = unusable(lambda: scaler.metrics(metadata, namespace=ATTACKER))
    assert "metadata key 'keyFile'" in details and "encrypted" in details


def test_a_relative_trigger_file_dir_stops_the_server_naming_the_setting() -> None:
    result = run_cli("serve", "--trigger-file-dirs", "/etc/certs,secrets/tls", timeout=30)
    assert result.returncode == 2
    assert "trigger_file_dirs" in result.stderr and "absolute" in result.stderr


def test_devices_a_named_connection_names_are_refused_and_memory_stays_bounded(scaler: ScalerProcess) -> None:
    process = psutil.Process(scaler.proc.pid)
    before = process.memory_info().rss
    for _ in range(30):
        details = unusable(lambda: scaler.metrics(pubsub(connection="zero-credentials"), namespace=ATTACKER))
        assert "metadata key 'credentialsFile'" in details and "not a regular file" in details
        assert "/dev/zero" not in details  # the operator's path is not shown to the tenant
        details = unusable(
            lambda: scaler.metrics(
                {"adapter": "prometheus", "connection": "urandom-ca", "query": "vector(1)", "threshold": "1"},
                namespace=ATTACKER,
            )
        )
        assert "metadata key 'caFile'" in details and "not a regular file" in details
    grown = process.memory_info().rss - before
    assert grown < 30 * 1024 * 1024, f"RSS grew by {grown / 1e6:.0f} MB reading devices"


def test_a_dozen_spellings_of_a_fifo_at_once_leave_other_tenants_served(
    scaler: ScalerProcess, prometheus: PrometheusServer, tree: Tree
) -> None:
    d = tree.allowed
    spellings = [f"{d}/fifo", f"{d}//fifo", f"{d}/./fifo", f"{d}///fifo", f"{d}/././fifo", f"{d}//./fifo",
                 f"{d}/fifo/", f"{d}/link-to-fifo", f"{d}/./link-to-fifo", f"{d}//link-to-fifo",
                 f"{d}/link-to-link", f"{d}/./link-to-link"]  # fmt: skip
    attacks = [pubsub(credentialsFile=p) for p in spellings] + [amqps(caFile=p) for p in spellings]
    stop = threading.Event()
    codes: list[tuple[grpc.StatusCode, str]] = []

    def attack(metadata: dict[str, str]) -> None:
        while not stop.is_set():
            error = error_of(lambda: scaler.metrics(metadata, timeout=20, namespace=ATTACKER))
            codes.append((error.code(), str(error.details())))

    # The victim names its Prometheus by host name: a DNS lookup on the default executor, first done now.
    victim = prom(prometheus, serverAddress=prometheus.url.replace("127.0.0.1", "localhost"))
    slowest = 0.0
    with ThreadPoolExecutor(len(attacks)) as pool:
        running = [pool.submit(attack, m) for m in attacks]
        time.sleep(0.5)
        try:
            for _ in range(20):
                started = time.monotonic()
                assert scaler.value(victim, namespace=VICTIM) == 6
                assert httpx.get(f"{scaler.http_url}/healthz", timeout=2).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
        finally:
            stop.set()
        for future in running:
            future.result(timeout=30)
    assert slowest < 2, f"the victim waited {slowest:.1f}s while the attack was in flight"
    assert len(codes) >= len(attacks)
    for code, details in codes:
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "not a regular file" in details, (code, details)
        assert "metadata key 'credentialsFile'" in details or "metadata key 'caFile'" in details


def test_every_path_field_of_every_adapter_is_declared_in_path_keys() -> None:
    for adapter in discover_adapter_classes().values():
        model = adapter.metadata_model
        paths = {key for key in model.keys() if key.endswith("File")}  # noqa: SIM118 - a classmethod, not a dict
        declared = {*model.path_keys, *model.env_path_keys}
        assert paths <= declared, f"{model.__name__}: {sorted(paths - declared)}"


def test_a_flood_of_stuck_reads_is_refused_at_once_and_dns_still_resolves(tree: Tree) -> None:
    # A job blocked on an event stands in for a read stuck on a hung network mount.
    release = threading.Event()

    async def flood() -> float:
        stuck = [asyncio.ensure_future(files.off_loop(release.wait, "stuck")) for _ in range(files.MAX_PENDING)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="too many file reads in flight"):
            await files.read_file("caFile", str(tree.allowed / "ca.pem"), files.MAX_TLS_BYTES)
        refused_in = time.monotonic() - started
        # The default executor, which the egress check's getaddrinfo uses, is untouched by the stuck reads.
        assert await asyncio.get_running_loop().getaddrinfo("localhost", 80)
        release.set()
        assert all(await asyncio.gather(*stuck))
        # The slots come back once the stuck reads end.
        assert (await files.read_file("caFile", str(tree.allowed / "ca.pem"), files.MAX_TLS_BYTES)).startswith(b"-----")
        return refused_in

    assert asyncio.run(flood()) < 1
