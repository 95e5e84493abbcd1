"""Egress policy: where trigger metadata may make the scaler connect.

Anyone who may create a ScaledObject chooses the addresses in its metadata, so every address an adapter
declares in `address_keys` is checked here before any connection is made:

- `egress_allow` entries are host names (`prometheus.monitoring`, `*.monitoring.svc`), IPs or CIDRs
  (`10.0.0.0/8`) and URL prefixes (`https://prometheus.example:9090/api/`). Empty: any address except
  the forbidden ones below.
- Link-local addresses (169.254.0.0/16, fe80::/10, which hold cloud metadata servers such as
  169.254.169.254) and metadata host names are refused unless an entry names them specifically
  (a host entry equal to the name, or a CIDR inside the link-local range; `0.0.0.0/0` does not count).
- Embedded forms of a refused IPv4 address are refused like it: IPv4-mapped and IPv4-compatible IPv6,
  NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16), Teredo and ISATAP.
- One host, checked once, connected to as checked. Hosts are normalised as the clients send them
  (UTS-46, as yarl/aiohttp do; adapters/resolve.py); a host that does not normalise is refused. Right
  before a reading, each host is resolved once (off the event loop, bounded, cached for at most the
  answer's TTL), the policy is applied to that answer, and the approved addresses are pinned for the
  reading: the clients' resolve hook (`connect_addresses`) returns them, and the clients connect to
  them without a second lookup. A DNS answer that changes after the check (rebinding) is never used.
- URL paths are normalised (unreserved percent-escapes decoded) before URL-prefix rules compare them, and
  dot segments (`..`, `.`, `%2e%2e`, `..%2f`, double-encoded, ...) are refused outright.
- `allow_inline_addresses: false` refuses every address given by a trigger: only named connections
  (addresses from the operator's config file) remain usable. Named connections are not checked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from adapters.api import InvalidMetadata, SourcePermissionDenied, SourceUnavailable, idna_host
from adapters.resolve import getaddrinfo_addresses

from .nameservers import Nameservers

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LINK_LOCAL: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS's IPv6 instance metadata endpoint
)
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}
_NUMERIC_V4 = re.compile(r"[0-9a-fA-FxX.]+")
_RESOLVE_CACHE_SECONDS = 30.0  # the longest an approved answer is reused (less when its TTL is shorter)
_FAILED_RESOLVE_CACHE_SECONDS = 5.0  # a DNS hiccup should not refuse a source for long
_RESOLVE_CACHE_SIZE = 4096
# RFC 3986 unreserved characters: their percent-escapes mean the character itself, so they are decoded
# before prefix rules compare paths (`/tenant-%61/` is `/tenant-a/`).
_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|5[fF]|7[eE]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9])")
_PERCENT_DECODE_ROUNDS = 3  # a server that decodes more often than this is not one to trust anyway


# --- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    host: str  # lower-case; "*.suffix" matches any name ending in ".suffix"

    def matches(self, host: str) -> bool:
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


@dataclass(frozen=True)
class NetworkRule:
    network: IPNetwork

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.network.version and ip in self.network

    @property
    def names_link_local(self) -> bool:
        return any(
            self.network.version == net.version and self.network.subnet_of(net)  # type: ignore[arg-type]
            for net in LINK_LOCAL
        )


@dataclass(frozen=True)
class UrlRule:
    scheme: str
    host: str
    port: int | None
    path: str  # always ends with "/": a prefix on path-segment boundaries

    def matches(self, dest: Destination) -> bool:
        if dest.scheme != self.scheme or dest.host != self.host or dest.effective_port != self.port:
            return False
        return (dest.path.rstrip("/") + "/").startswith(self.path)


Rule = HostRule | NetworkRule | UrlRule


def parse_rule(entry: str) -> Rule:
    """One `egress_allow` entry; ValueError names the entry when it is not a host, CIDR or URL prefix."""
    text = entry.strip()
    if "://" in text:
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"egress_allow entry {entry!r} has an invalid port") from None
        if not parts.hostname or parts.username or parts.password:
            raise ValueError(f"egress_allow entry {entry!r} must be scheme://host[:port][/path], without userinfo")
        scheme = parts.scheme.lower()
        try:
            host, path = _normal_host(parts.hostname), normal_path(parts.path)
        except ValueError as exc:
            raise ValueError(f"egress_allow entry {entry!r} {exc}") from None
        return UrlRule(scheme, host, port or _DEFAULT_PORTS.get(scheme), path.rstrip("/") + "/")
    try:
        return NetworkRule(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    wildcard = text.startswith("*.")
    try:
        host = _normal_host(text.removeprefix("*."))
    except ValueError:
        raise ValueError(f"egress_allow entry {entry!r} is not a host name, IP, CIDR or URL prefix") from None
    return HostRule(f"*.{host}" if wildcard else host)


# --- destinations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    key: str  # the metadata key it came from
    scheme: str  # "" when the value was a bare host[:port]
    host: str
    port: int | None
    path: str
    ip: IPAddress | None  # set when the host is an IP literal, in any form the OS resolver accepts

    @property
    def effective_port(self) -> int | None:
        return self.port or _DEFAULT_PORTS.get(self.scheme)

    def __str__(self) -> str:
        return f"host '{self.host}' (metadata key '{self.key}')"


def parse_destination(key: str, value: str) -> Destination:
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        port = parts.port
    except ValueError:
        raise InvalidMetadata(key, "is not a valid address (expected a URL or host[:port])") from None
    if not parts.hostname:
        raise InvalidMetadata(key, "has no host name")
    try:
        host = _normal_host(parts.hostname)
    except ValueError as exc:
        raise InvalidMetadata(key, f"host '{parts.hostname[:100]}' {exc}") from None
    try:
        path = normal_path(parts.path or "/")
    except ValueError as exc:
        raise InvalidMetadata(key, f"URL path {exc}") from None
    return Destination(key, parts.scheme.lower(), host, port, path, literal_ip(host))


def normal_path(path: str) -> str:
    """The path with unreserved percent-escapes decoded; ValueError when it has a dot segment in any encoding.

    Servers and proxies resolve `..` (and many decode `%2e%2e`, `%2f`, or decode twice) before routing, so
    `/tenant-a/../tenant-b` would pass a `/tenant-a/` prefix rule and be served from `/tenant-b`. No source
    URL needs a dot segment: refusing them leaves the prefix comparison one meaning.
    """
    decoded = path
    for _ in range(_PERCENT_DECODE_ROUNDS):
        segments = re.split(r"[/\\]", decoded)
        if any(segment in (".", "..") for segment in segments):
            raise ValueError("has a dot segment ('.' or '..', percent-encoded or not); give the path without it")
        # Not-UTF-8 escapes stay as they are: no dot or slash hides in them.
        once = unquote(decoded, errors="surrogateescape")
        if once == decoded:
            break
        decoded = once
    else:
        if "%" in decoded:
            raise ValueError("is percent-encoded more than 3 times over")
    return _UNRESERVED_ESCAPE.sub(lambda match: chr(int(match[1], 16)), path)


@functools.lru_cache(maxsize=4096)
def _ip_text(ip: IPAddress) -> str:
    # Every source query pins its addresses as text; ipaddress formats in Python (~1% of samples at scale).
    return str(ip)


def literal_ip(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, without DNS: '169.254.169.254', '[fe80::1]', and also
    the forms getaddrinfo() accepts as IPv4 literals ('2852039166', '0xa9.0xfe.0xa9.0xfe')."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not _NUMERIC_V4.fullmatch(host):
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return _unmapped(ip)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _normal_host(host: str) -> str:
    # The clients' own normalisation (UTS-46 like yarl), so the check and the connection see one host.
    return idna_host(host)


_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and that a gateway or tunnel may deliver to.

    IPv4-mapped and -compatible, NAT64 (RFC 6052: the well-known /96, and every prefix length in the
    local-use /48, since the operator picks one), 6to4, Teredo (server and client) and ISATAP.
    """
    value = int(ip)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE and value > 1:  # :: and ::1 are not IPv4-compatible addresses
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _NAT64_LOCAL:
        found.extend(_rfc6052_candidates(ip.packed))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (value >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP interface id: [02]00:5efe:a.b.c.d
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def _rfc6052_candidates(packed: bytes) -> list[ipaddress.IPv4Address]:
    # RFC 6052 section 2.2: the IPv4 bytes follow the prefix (/48, /56, /64 here), skipping byte 8 (the
    # "u" octet), or fill the last 4 bytes (/96).
    usable = packed[:8] + packed[9:]
    return [ipaddress.IPv4Address(usable[start : start + 4]) for start in (6, 7, 8)] + [
        ipaddress.IPv4Address(packed[12:16])
    ]


def is_forbidden_ip(ip: IPAddress) -> bool:
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += embedded_ipv4(ip)
    return any(c.version == net.version and c in net for c in candidates for net in LINK_LOCAL)


# --- the policy --------------------------------------------------------------------------------

Pending = Literal["none", "forbidden_only", "allow_list"]


@dataclass(frozen=True)
class Checked:
    """A destination that passed the literal check, and what DNS must still confirm before connecting."""

    destination: Destination
    pending: Pending


class EgressPolicy:
    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        allow_inline: bool = True,
        resolve_timeout: float = 2.0,
        nameservers: Sequence[str] = (),
    ) -> None:
        self.rules = [parse_rule(entry) for entry in allow]
        self.allow_inline = allow_inline
        self.resolve_timeout = resolve_timeout
        self.nameservers = Nameservers(nameservers, resolve_timeout) if nameservers else None
        self._resolved: dict[str, tuple[float, list[IPAddress] | None]] = {}
        self._lookups: dict[str, asyncio.Future[list[IPAddress] | None]] = {}

    # Synchronous, at parse time: no I/O, so GetMetricSpec refuses a forbidden address at once.

    def check_inline(self, adapter: str, keys: Iterable[str]) -> None:
        given = sorted(keys)
        if given and not self.allow_inline:
            raise SourcePermissionDenied(
                f"metadata key '{given[0]}': this scaler does not accept addresses in trigger metadata "
                f"(allow_inline_addresses is false); use a named connection for the {adapter} adapter"
            )

    def check(self, destination: Destination) -> Checked:
        dest = destination
        named = self._names_explicitly(dest)
        if not named and (dest.host in METADATA_HOSTS or (dest.ip is not None and is_forbidden_ip(dest.ip))):
            raise SourcePermissionDenied(
                f"egress policy refuses {dest}: link-local and cloud metadata addresses are refused "
                "unless egress_allow names them"
            )
        if not self.rules:
            return Checked(dest, "none" if dest.ip is not None or named else "forbidden_only")
        if self._matches(dest):
            return Checked(dest, "none" if dest.ip is not None or named else "forbidden_only")
        if dest.ip is None and any(isinstance(rule, NetworkRule) for rule in self.rules):
            return Checked(dest, "allow_list")  # a name may still resolve into an allowed CIDR
        raise SourcePermissionDenied(f"egress policy refuses {dest}: it is not in egress_allow")

    def _matches(self, dest: Destination) -> bool:
        for rule in self.rules:
            if isinstance(rule, HostRule) and dest.ip is None and rule.matches(dest.host):
                return True
            if isinstance(rule, NetworkRule) and dest.ip is not None and rule.contains(dest.ip):
                return True
            if isinstance(rule, UrlRule) and rule.matches(dest):
                return True
        return False

    def _names_explicitly(self, dest: Destination) -> bool:
        """True when an entry names this destination itself, not a wildcard or broad CIDR that happens to cover it."""
        for rule in self.rules:
            if isinstance(rule, HostRule) and rule.host == dest.host:
                return True
            if isinstance(rule, UrlRule) and rule.matches(dest):
                return True
            if (
                isinstance(rule, NetworkRule)
                and dest.ip is not None
                and rule.names_link_local
                and rule.contains(dest.ip)
            ):
                return True
        return False

    # Asynchronous, right before the adapter connects: DNS once, off the event loop and bounded; the
    # answer is checked and pinned, and the clients connect to exactly what was checked.

    async def approve(self, checked: Sequence[Checked]) -> dict[str, tuple[str, ...]]:
        """Each destination's host -> the addresses its connection may go to (resolved once, policy applied)."""
        return {item.destination.host: await self._approve_one(item) for item in checked}

    async def _approve_one(self, item: Checked) -> tuple[str, ...]:
        dest = item.destination
        if dest.ip is not None:
            return (_ip_text(dest.ip),)
        addresses = await self._resolve(dest.host, dest.effective_port or 0)
        if addresses is None:
            raise SourceUnavailable(f"cannot resolve {dest}")
        if item.pending != "none":
            self.check_addresses(item, addresses)
        return tuple(_ip_text(ip) for ip in addresses)

    @contextmanager
    def pinned(self, checked: Sequence[Checked]) -> Iterator[None]:
        """For the reading running inside: its clients get, from `connect_addresses`, the addresses the policy
        approves for each destination the trigger gave. A destination is resolved and checked when a client
        first connects to it in this reading, not before: a key's token host that the reading never needs
        (a loopback PromQL endpoint gets no Google token) is never looked up."""
        state: dict[str, Checked | tuple[str, ...]] = {item.destination.host: item for item in checked}
        token = _APPROVED.set(state)
        try:
            yield
        finally:
            _APPROVED.reset(token)

    async def connect_addresses(self, host: str, port: int) -> tuple[str, ...]:
        """The clients' resolve hook (adapters/resolve.py): where a connection to `host` may go.

        A host the running reading's trigger gave gets what `approve` pinned for it. Any other host is
        not a tenant's (a named connection's address, or a service the adapter itself names): it is
        resolved by the same resolver, unchecked, so the client still never looks it up on its own.
        """
        try:
            name = _normal_host(host)
        except ValueError:
            raise SourceUnavailable(f"host '{host[:100]}' is not a valid host name") from None
        state = _APPROVED.get() or {}
        approved = state.get(name)
        if isinstance(approved, Checked):
            # Once per reading and host: every connection of this reading goes to what this one answer approved.
            state[name] = approved = await self._approve_one(approved)
        if approved is not None:
            return approved
        ip = literal_ip(name)
        if ip is not None:
            return (str(ip),)
        addresses = await self._resolve(name, port)
        if addresses is None:
            raise SourceUnavailable(f"cannot resolve host '{name}'")
        return tuple(_ip_text(ip) for ip in addresses)

    def check_addresses(self, item: Checked, addresses: Sequence[IPAddress]) -> None:
        dest = item.destination
        forbidden = [ip for ip in addresses if is_forbidden_ip(ip)]
        if forbidden:
            raise SourcePermissionDenied(
                f"egress policy refuses {dest}: it resolves to the link-local address {forbidden[0]}"
            )
        if item.pending == "allow_list":
            networks = [rule for rule in self.rules if isinstance(rule, NetworkRule)]
            outside = [ip for ip in addresses if not any(rule.contains(_unmapped(ip)) for rule in networks)]
            if outside:
                raise SourcePermissionDenied(
                    f"egress policy refuses {dest}: it resolves to {outside[0]}, which is not in egress_allow"
                )

    async def _resolve(self, host: str, port: int) -> list[IPAddress] | None:
        """The host's addresses (None: it does not resolve), cached for at most the answer's TTL."""
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        # One lookup per host at a time: a thousand triggers on a new host wait for the same answer.
        pending = self._lookups.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve_now(host, port))
            self._lookups[host] = pending
            pending.add_done_callback(lambda done: self._lookup_done(host, done))
        return await asyncio.shield(pending)

    def _lookup_done(self, host: str, done: asyncio.Future[list[IPAddress] | None]) -> None:
        self._lookups.pop(host, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have given up waiting

    async def _resolve_now(self, host: str, port: int) -> list[IPAddress] | None:
        now = time.monotonic()
        addresses: list[IPAddress] | None
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses, ttl = await self._lookup(host, port)
        except TimeoutError:
            raise SourceUnavailable(
                f"egress policy could not resolve host '{host}' within {self.resolve_timeout:g}s"
            ) from None
        except OSError:
            addresses, ttl = None, _FAILED_RESOLVE_CACHE_SECONDS
        if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
            self._resolved.pop(next(iter(self._resolved)))
        if ttl > 0:
            self._resolved[host] = (now + ttl, addresses)
        return addresses

    async def _lookup(self, host: str, port: int) -> tuple[list[IPAddress], float]:
        if self.nameservers is None:
            found = await getaddrinfo_addresses(host, port)
            return [_unmapped(ipaddress.ip_address(ip)) for ip in found], _RESOLVE_CACHE_SECONDS
        addresses, ttl = await self.nameservers.lookup(host)
        return [_unmapped(ip) for ip in addresses], min(ttl, _RESOLVE_CACHE_SECONDS)


# None outside a reading: a mutable default would be one dict shared by every context.
_APPROVED: ContextVar[dict[str, Checked | tuple[str, ...]] | None] = ContextVar("egress_approved", default=None)
