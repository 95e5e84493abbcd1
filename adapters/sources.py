"""What identifies a measured thing. The engine caches, coalesces and polls by SourceKey, never by ScaledObject."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceKey:
    """Endpoint + credentials identity + object + mode (+ options that change the number).

    Two ScaledObjects whose triggers produce equal keys share one reading. Never put a secret here:
    `identity` is a digest of the credentials, and `endpoint` has no userinfo.
    """

    adapter: str
    endpoint: str
    object: str
    mode: str = ""
    identity: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.options)
        mode = f"[{self.mode}{';' + extra if extra else ''}]" if self.mode or extra else ""
        return f"{self.adapter}:{self.endpoint}/{self.object}{mode}"


def credentials_identity(*parts: str | None) -> str:
    """A short digest standing for a set of credentials: equal credentials share clients, and nothing leaks."""
    if not any(parts):
        return ""
    digest = hashlib.sha256("\x00".join(p or "" for p in parts).encode()).hexdigest()
    return digest[:16]
