"""Egress policy: where trigger metadata may make the scaler connect.

Anyone who may create a ScaledObject chooses the addresses in its metadata, so every address an adapter
declares in `address_keys` is checked here before any connection is made:

- `egress_allow` entries are host names (`prometheus.monitoring`, `*.monitoring.svc`), IPs or CIDRs
  (`10.0.0.0/8`) and URL prefixes (`https://prometheus.example:9090/api/`). Empty: any address except
  the forbidden ones below.
- Link-local addresses (169.254.0.0/16, fe80::/10, which hold cloud metadata servers such as
  169.254.169.254) and metadata host names are refused unless an entry names them specifically
  (a host entry equal to the name, or a CIDR inside the link-local range; `0.0.0.0/0` does not count).
- Host names are resolved (off the event loop, with a timeout, cached briefly): a name that resolves to a
  link-local address is refused, and a name that matches no host or URL entry is allowed only if all its
  addresses fall in allowed CIDRs. DNS can change between this check and the connection; see
  docs/SECURITY.md (NetworkPolicy is the hard boundary, this is the early, explained refusal).
- `allow_inline_addresses: false` refuses every address given by a trigger: only named connections
  (addresses from the operator's config file) remain usable. Named connections are not checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from adapters.api import InvalidMetadata, SourcePermissionDenied, SourceUnavailable

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
_RESOLVE_CACHE_SECONDS = 30.0
_FAILED_RESOLVE_CACHE_SECONDS = 5.0  # a DNS hiccup should not refuse a source for long
_RESOLVE_CACHE_SIZE = 4096


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
        return UrlRule(
            scheme, _normal_host(parts.hostname), port or _DEFAULT_PORTS.get(scheme), parts.path.rstrip("/") + "/"
        )
    try:
        return NetworkRule(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    host = _normal_host(text)
    label = host.removeprefix("*.")
    if not label or not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", label) or "*" in label:
        raise ValueError(f"egress_allow entry {entry!r} is not a host name, IP, CIDR or URL prefix")
    return HostRule(host)


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
    host = _normal_host(parts.hostname)
    return Destination(key, parts.scheme.lower(), host, port, parts.path or "/", literal_ip(host))


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
    return host.strip().strip("[]").lower().rstrip(".")


def is_forbidden_ip(ip: IPAddress) -> bool:
    ip = _unmapped(ip)
    return any(ip.version == net.version and ip in net for net in LINK_LOCAL)


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
    ) -> None:
        self.rules = [parse_rule(entry) for entry in allow]
        self.allow_inline = allow_inline
        self.resolve_timeout = resolve_timeout
        self._resolved: dict[str, tuple[float, list[IPAddress] | None]] = {}

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

    # Asynchronous, right before the adapter connects: DNS, off the event loop and bounded.

    async def confirm(self, checked: Sequence[Checked]) -> None:
        for item in checked:
            if item.pending != "none":
                await self._confirm_one(item)

    async def _confirm_one(self, item: Checked) -> None:
        dest = item.destination
        addresses = await self._resolve(dest)
        if addresses is None:
            if item.pending == "allow_list":
                raise SourceUnavailable(f"cannot resolve {dest} to check it against egress_allow")
            return  # nothing to check; the adapter's own connection attempt reports the DNS failure
        self.check_addresses(item, addresses)

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

    async def _resolve(self, dest: Destination) -> list[IPAddress] | None:
        now = time.monotonic()
        cached = self._resolved.get(dest.host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses: list[IPAddress] | None = await system_resolver(dest.host, dest.effective_port or 0)
        except TimeoutError:
            raise SourceUnavailable(
                f"egress policy could not resolve {dest} within {self.resolve_timeout:g}s"
            ) from None
        except OSError:
            addresses = None
        if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
            self._resolved.pop(next(iter(self._resolved)))
        ttl = _RESOLVE_CACHE_SECONDS if addresses is not None else _FAILED_RESOLVE_CACHE_SECONDS
        self._resolved[dest.host] = (now + ttl, addresses)
        return addresses


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """getaddrinfo() on the loop's executor: the event loop never waits for DNS."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [_unmapped(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])) for info in infos]
