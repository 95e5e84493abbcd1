"""Files named in metadata (TLS material, credentials documents): read safely, and never on the event loop.

A path can name a FIFO (opening it waits for a writer), a device (/dev/zero never ends), a directory or a
file on a hung network mount. So every read here:
- runs on a small executor of its own: a read that never returns holds one of its threads, never the event
  loop nor the default executor that DNS lookups (the egress checks) and google-auth depend on;
- is refused at once when `MAX_PENDING` reads are already queued or running, rather than queued forever;
- opens with O_NONBLOCK|O_NOCTTY (a FIFO opens without a writer, a terminal never becomes ours), checks what
  it opened with fstat and refuses anything but a regular file, and reads at most the cap.
TLS contexts are built from the bytes read, on the same executor: OpenSSL never opens the path itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import ssl
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import SourcePrecondition, SourceUnavailable

T = TypeVar("T")

MAX_TLS_BYTES = 1024 * 1024  # a full public CA bundle is ~220 KiB
MAX_CREDENTIALS_BYTES = 64 * 1024  # a service account key is ~2.4 KiB
MAX_WORKERS = 2
MAX_PENDING = 16
READ_TIMEOUT = 5.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

_slots = threading.BoundedSemaphore(MAX_PENDING)


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="scaler-files")


def unusable(key: str, reason: str) -> SourcePrecondition:
    # The path is not repeated: it may be a named connection's, which a tenant using it should not learn.
    return SourcePrecondition(f"metadata key '{key}': the file cannot be used: {reason}")


async def off_loop(job: Callable[[], T], what: str) -> T:
    """Run `job` on the file executor; SourceUnavailable when it is saturated or `job` outlives READ_TIMEOUT."""
    if not _slots.acquire(blocking=False):
        raise SourceUnavailable(f"{what}: too many file reads in flight ({MAX_PENDING}); try again later")
    try:
        future: Future[T] = _executor().submit(job)
    except BaseException:
        _slots.release()
        raise
    # Released when the job ends (or is cancelled before it starts), not when the caller stops waiting:
    # a read stuck on a hung mount keeps its slot, so stuck reads cannot pile up without bound.
    future.add_done_callback(lambda _: _slots.release())
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), READ_TIMEOUT)
    except TimeoutError:
        raise SourceUnavailable(f"{what}: reading the file took longer than {READ_TIMEOUT:g}s") from None


def read_regular(key: str, path: str, max_bytes: int) -> bytes:
    """The content of a regular file of at most `max_bytes` (blocking: call it through off_loop)."""
    try:
        # stat before open: opening some devices has effects of its own (a watchdog arms, a tape rewinds).
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise unusable(key, "it is not a regular file")
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise unusable(key, "it does not exist") from None
    except PermissionError:
        raise unusable(key, "it is not readable") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise unusable(key, f"it cannot be opened ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
            raise unusable(key, "it is not a regular file")
        chunks: list[bytes] = []
        size = 0
        # Read to the end, not to st_size: /proc files say 0 bytes and have more.
        while chunk := os.read(fd, min(65536, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise unusable(key, f"it is larger than {max_bytes // 1024} KiB")
        return b"".join(chunks)
    except OSError as exc:
        raise unusable(key, f"it is not readable ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)


async def read_file(key: str, path: str, max_bytes: int) -> bytes:
    return await off_loop(lambda: read_regular(key, path, max_bytes), f"metadata key '{key}'")


def resolve_within(path: str, allowed: Sequence[tuple[str, str]]) -> str | None:
    """`path`, normalised, when it and its realpath lie inside one of `allowed` (dir as written, its realpath).

    None otherwise. A path not even spelled inside an allowed directory is refused before any system call,
    so the answer (and its timing) cannot tell whether it exists.
    """
    if not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        return None
    lexical = os.path.normpath(path)
    if not any(_inside(lexical, written) or _inside(lexical, real) for written, real in allowed):
        return None
    real = os.path.realpath(lexical)
    return lexical if any(_inside(real, real_dir) for _, real_dir in allowed) else None


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def allowed_dirs(dirs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Each allowed directory as written (normalised) and resolved, for resolve_within."""
    return tuple((os.path.normpath(d), os.path.realpath(d)) for d in dirs)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The TLS material of one client: paths from metadata (keys caFile, certFile, keyFile), or PEM contents
    (KEDA's keys ca, cert, key, keyPassword), which win over the paths."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    ca_pem: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)
    key_password: str = field(default="", repr=False)


async def client_tls_context(files: TlsFiles, *, verify: bool) -> ssl.SSLContext:
    """A client SSLContext with the private CA and client certificate of `files`, built off the loop."""
    return await off_loop(lambda: _build_context(files, verify), "TLS files")


def _build_context(files: TlsFiles, verify: bool) -> ssl.SSLContext:
    cadata = None
    ca_key, ca_failed = ("ca", pem_unusable) if files.ca_pem else ("caFile", unusable)
    if verify and (files.ca_pem or files.ca_file):
        raw = files.ca_pem.encode() if files.ca_pem else read_regular("caFile", files.ca_file, MAX_TLS_BYTES)
        blocks = _PEM_CERTIFICATE.findall(raw)
        if not blocks:
            raise ca_failed(ca_key, "it holds no PEM certificate")
        cadata = b"\n".join(blocks).decode("ascii", "replace")
    try:
        # Without cadata this loads the system's CA store: the scaler image's files, read here off the loop.
        context = ssl.create_default_context(cadata=cadata)
    except ssl.SSLError as exc:
        raise ca_failed(ca_key, f"its certificates cannot be loaded ({_reason(exc)})") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if files.cert_pem:
        # PEM contents from metadata: loaded from memory (a memfd), never written where others could read.
        _load_cert_chain(context, files.cert_pem.encode(), files.key_pem.encode() or None, files.key_password, pem=True)
    elif files.cert_file:
        cert = read_regular("certFile", files.cert_file, MAX_TLS_BYTES)
        key = read_regular("keyFile", files.key_file, MAX_TLS_BYTES) if files.key_file else None
        _load_cert_chain(context, cert, key)
    return context


def pem_unusable(key: str, reason: str) -> SourcePrecondition:
    return SourcePrecondition(f"metadata key '{key}': the PEM contents cannot be used: {reason}")


def _load_cert_chain(
    context: ssl.SSLContext, cert: bytes, key: bytes | None, password: str = "", *, pem: bool = False
) -> None:
    cert_key, key_key = ("cert", "key") if pem else ("certFile", "keyFile")
    failed = pem_unusable if pem else unusable
    with contextlib.ExitStack() as stack:
        cert_path = stack.enter_context(_memory_file(cert))
        key_path = stack.enter_context(_memory_file(key)) if key is not None else None
        try:
            # Without a password, a callback that refuses: otherwise OpenSSL would prompt on the terminal
            # for an encrypted key.
            context.load_cert_chain(cert_path, key_path, password=password.encode() if password else _no_password)
        except ssl.SSLError as exc:
            if password and key is not None and b"ENCRYPTED" in key:
                # OpenSSL says only "PEM lib" when the password is wrong: the encrypted key is the likely cause.
                raise failed("keyPassword", "it does not decrypt the key") from None
            raise failed(cert_key, f"the certificate and key cannot be used ({_reason(exc)})") from None
        except _EncryptedKey:
            what = "give keyPassword or an unencrypted key" if pem else "give an unencrypted key"
            raise failed(key_key, f"the key is encrypted; {what}") from None


def _reason(exc: ssl.SSLError) -> str:
    # Some OpenSSL errors carry no reason code, only a text such as "[SSL] PEM lib (_ssl.c:3900)".
    return str(exc.reason or (exc.args[1] if len(exc.args) > 1 else type(exc).__name__))


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open holding `data`, private to this process: a memfd on Linux."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("scaler-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as handle:  # elsewhere: a 0600 file, removed on exit
        handle.write(data)
        handle.flush()
        yield handle.name
