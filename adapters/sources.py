"""What identifies a measured thing. The engine caches, coalesces and polls by SourceKey, never by ScaledObject."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True, repr=False)
class SourceKey:
    """Endpoint + credentials identity + object + mode (+ options that change the number).

    Two ScaledObjects whose triggers produce equal keys share one reading, so every field holds one value,
    never a join of several: `scope` lists the names the object lives in (RabbitMQ's vhost), each on its own,
    so that no spelling of one name can pass for another (`a/b` + `c` is not `a` + `b/c`).
    Never put a secret here: `identity` is a digest of the credentials, and `endpoint` has no userinfo.
    Option values (headers, query parameters) may still be sensitive, so the text form shows only their
    names and a digest.
    """

    adapter: str
    endpoint: str
    object: str
    mode: str = ""
    identity: str = ""
    options: tuple[tuple[str, str], ...] = ()
    scope: tuple[str, ...] = ()

    def __str__(self) -> str:
        # Logs and asyncio task names carry this text: names say which options are set, the digest tells
        # keys apart, and no value (a header, a query parameter) is ever shown.
        names = [name for name, value in self.options if value]
        where = "".join(f"{quote(part, safe='')}/" for part in self.scope)  # as in RabbitMQ's URLs: %2F/orders
        extra = ";".join(part for part in (self.mode, ",".join(names)) if part)
        return f"{self.adapter}:{self.endpoint}/{where}{self.object}[{extra}#{self.options_digest}]"

    def __repr__(self) -> str:
        return f"SourceKey({self})"

    @property
    def options_digest(self) -> str:
        return _digest([list(pair) for pair in self.options])


def credentials_identity(*parts: str | None) -> str:
    """A short digest standing for a set of credentials: equal credentials share clients, and nothing leaks."""
    if not any(parts):
        return ""
    return _digest([p or "" for p in parts])


def _digest(value: object) -> str:
    # JSON, not a join: ("a\x00b", "c") and ("a", "b\x00c") must not digest alike.
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]
