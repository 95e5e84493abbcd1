"""A real Redis for the plugin's tests: SCALER_TEST_REDIS_ADDRESS, else the one on 127.0.0.1:6379 when it
answers, else Debian's `redis-server` started on a free loopback port (and stopped at the end).

Tests use unique key names and delete only their own keys: the Redis on :6379 may be shared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from scaler.testing import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    host: str
    port: int
    password: str = ""
    ca_file: str = ""  # set when the server speaks TLS only
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": self.ca_file} if self.ca_file else {}
        return redis.Redis(host=self.host, port=self.port, password=self.password or None, decode_responses=True, **tls)

    def unique_key(self, prefix: str) -> str:
        """A key no other test (or engineer) uses; deleted when the fixture ends."""
        key = f"scaler-test:{prefix}:{uuid.uuid4().hex[:12]}"
        self.keys.append(key)
        return key

    def ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def stop(self) -> None:
        if self.keys:
            with self.client() as client:
                client.delete(*self.keys)
            self.keys.clear()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def make_certificates(directory: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command line."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=scaler-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"
    )
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    )


def start_redis(*extra: str, password: str = "", tls_port: int = 0, ca_file: str = "") -> RedisServer:
    """Debian's redis-server on a free loopback port, without persistence."""
    if not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is not installed: run scripts/system-deps.sh (installs Debian's redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="scaler-redis-"))
    port = tls_port or free_port()
    args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), *extra]  # a later --port (e.g. 0 for TLS only) wins
    if password:
        args += ["--requirepass", password]
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = RedisServer("127.0.0.1", port, password, ca_file, proc, workdir)
    try:
        wait_for(server.ping, 15, f"redis-server on port {port}")
    except BaseException:
        server.stop()
        raise
    return server


def _shared_redis() -> RedisServer | None:
    address = os.environ.get("SCALER_TEST_REDIS_ADDRESS", "127.0.0.1:6379")
    host, _, port = address.rpartition(":")
    server = RedisServer(host, int(port))
    try:
        return server if server.ping() else None
    except redis.RedisError:
        if "SCALER_TEST_REDIS_ADDRESS" in os.environ:
            raise
        return None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _shared_redis() or start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[RedisServer]:
    """A Redis of our own that speaks only TLS, with a certificate from a throwaway CA (`ca_file`)."""
    certs = Path(tempfile.mkdtemp(prefix="scaler-redis-tls-"))
    make_certificates(certs)
    port = free_port()
    server = start_redis(
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certs / "server.pem"),
        "--tls-key-file",
        str(certs / "server.key"),
        "--tls-ca-cert-file",
        str(certs / "ca.pem"),
        "--tls-auth-clients",
        "no",
        tls_port=port,
        ca_file=str(certs / "ca.pem"),
    )
    yield server
    server.stop()
    shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_with_password() -> Iterator[RedisServer]:
    """A Redis of our own that requires a password (the shared one may not)."""
    server = start_redis(password=f"pw-{uuid.uuid4().hex[:16]}")
    yield server
    server.stop()
