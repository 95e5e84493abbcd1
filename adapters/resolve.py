"""Where clients connect: one hook that turns a host into the addresses a client may open, used by every client.

The engine gives its own hook (scaler/egress.py): it resolves a host once, applies the egress policy to
that answer and returns only approved addresses. The HTTP and AMQP clients connect to those addresses and
never look the name up again, so the address checked is the address connected to: a DNS answer that
changes between the check and the connection (rebinding, TTL 0) has nothing left to change.
Adapters outside the engine (the contract suite, a plugin's own tests) get `system_resolve`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import idna

from .errors import SourceUnavailable

Resolve = Callable[[str, int], Awaitable[tuple[str, ...]]]
"""(host, port) -> the IP addresses a client may connect to, in the order to try them; raises an
adapters.errors error (UNAVAILABLE when the name does not resolve, PERMISSION_DENIED when the policy
refuses what it resolves to)."""

SYSTEM_RESOLVE_TIMEOUT = 5.0
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")
# getaddrinfo() blocks a thread until the system resolver gives up: a dedicated pool, so names that never
# answer hold DNS threads only, never the loop's default executor that other work depends on.
_DNS_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")


# Cached: every source query normalises its host (the egress hook), and KEDA repeats the same few hosts.
# Bounded, and a host that raises is not cached (lru_cache stores results only).
@functools.lru_cache(maxsize=4096)
def idna_host(host: str) -> str:
    """The host as every client here sends it: UTS-46 (IDNA 2008) A-labels, lower-case, no trailing dot.

    This is yarl's rule (and so aiohttp's): ASCII hosts are only lower-cased, others go through
    `idna.encode(uts46=True)`. Python's own "idna" codec is IDNA 2003 and turns `ß.example` into
    `ss.example`, another host than the `xn--zca.example` aiohttp connects to, so it is never used.
    ValueError when the host is neither an IP literal nor a host name after that mapping.
    """
    text = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise ValueError("is not a valid international host name (UTS-46)") from None
    text = text.lower()
    if _is_ip_literal(text):
        return text
    if _HOST_NAME.fullmatch(text) and all(_valid_label(label) for label in text.split(".")):
        return text
    raise ValueError("is not a valid host name or IP address")


def _valid_label(label: str) -> bool:
    # An A-label must decode (yarl sends ASCII hosts as they are, so `xn--` garbage would reach DNS as is).
    if not label.startswith("xn--"):
        return True
    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def system_resolve(host: str, port: int) -> tuple[str, ...]:
    """getaddrinfo() on the DNS threads, bounded: no policy, for clients used outside the engine."""
    try:
        async with asyncio.timeout(SYSTEM_RESOLVE_TIMEOUT):
            return await getaddrinfo_addresses(idna_host(host), port)
    except TimeoutError:
        raise SourceUnavailable(f"cannot resolve host '{host}' within {SYSTEM_RESOLVE_TIMEOUT:g}s") from None
    except (OSError, ValueError):
        raise SourceUnavailable(f"cannot resolve host '{host}'") from None


async def getaddrinfo_addresses(host: str, port: int) -> tuple[str, ...]:
    """The system resolver's answer (hosts file, search domains, DNS), as IP strings without zone ids."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(_DNS_THREADS, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    return tuple(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
