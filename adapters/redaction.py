"""Keep secrets out of every string that leaves the process: logs, gRPC messages, metric labels, CLI output."""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@host or scheme://token@host: drop everything between // and @.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_MIN_SECRET_LEN = 3  # shorter "secrets" would redact ordinary words


class SecretRegistry:
    """Values known to be secret (passwords, tokens) seen in metadata or connection configs.

    Thread-safe because the logging filter may run on grpc's threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def add(self, *values: str) -> None:
        new = {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
        if new - self._secrets:
            with self._lock:
                self._secrets = self._secrets | new

    def redact(self, text: str) -> str:
        text = _USERINFO.sub(r"\g<scheme>***@", text)
        # Longest first, so a secret that contains another is removed whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        return text


SECRETS = SecretRegistry()


def redact(text: str) -> str:
    return SECRETS.redact(text)


def strip_userinfo(url: str) -> str:
    """The URL without user:password@, for labels, messages and source keys."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\g<scheme>", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
