"""Resolving host names through given DNS servers (`egress_nameservers`) instead of the system resolver.

For clusters that want the scaler's egress decisions to follow one resolver of their choosing, and for
tests, which need a resolver under their control (a DNS server whose answers change, TTL 0).
The system resolver (getaddrinfo: hosts file, search domains) stays the default.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_DNS_PORT = 53


def parse_nameserver(entry: str) -> tuple[str, int]:
    """`10.0.0.10`, `10.0.0.10:5353`, `[fd00::a]:53` or `fd00::a`; ValueError names the entry."""
    text = entry.strip()
    host, port = text, _DNS_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(entry, rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(entry, port_text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(f"egress_nameservers entry {entry!r} is not an IP address[:port]") from None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"egress_nameservers entry {entry!r} has an invalid port")
    return int(text)


class Nameservers:
    """A and AAAA lookups against the given servers, asynchronous (no thread), with the answer's TTL."""

    def __init__(self, servers: Sequence[str], timeout: float) -> None:
        import dns.asyncresolver  # deferred: only scalers configured with nameservers load dnspython
        import dns.nameserver

        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in servers]
        self.resolver.lifetime = timeout
        self.resolver.cache = None  # the egress policy caches, bounded by the TTL

    async def lookup(self, host: str) -> tuple[list[IPAddress], float]:
        """The host's addresses and the smallest TTL among them; OSError when it has none."""
        import dns.exception

        answers = await asyncio.gather(
            *(self.resolver.resolve(host, kind, search=False, raise_on_no_answer=False) for kind in ("A", "AAAA")),
            return_exceptions=True,
        )
        addresses: list[IPAddress] = []
        ttls: list[float] = []
        for answer in answers:
            if isinstance(answer, dns.exception.Timeout):
                raise TimeoutError(f"no DNS answer for {host}")
            if isinstance(answer, BaseException):
                if isinstance(answer, dns.exception.DNSException):
                    continue  # NXDOMAIN, no servers answering: counted as "no address" below
                raise answer
            if answer.rrset is not None:
                ttls.append(answer.rrset.ttl)
                addresses += [ipaddress.ip_address(record.address) for record in answer.rrset]
        if not addresses:
            raise OSError(f"{host} has no A or AAAA record")
        return addresses, float(min(ttls))
