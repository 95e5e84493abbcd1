"""Keep secrets out of every string that leaves the process: logs, gRPC messages, metric labels, CLI output."""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@host or scheme://token@host: drop everything between // and @.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
# Anyone who can create a ScaledObject chooses "secrets": short ones would let them censor ordinary
# words from every log line (a password equal to their namespace hides it). Secrets are not put in
# messages anyway; this registry is the second line of defence.
_MIN_SECRET_LEN = 8
_MAX_SECRETS = 10_000  # bounded: new triggers with new passwords must not grow memory (and redact cost) forever


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
                merged = self._secrets | new
                if len(merged) > _MAX_SECRETS:
                    # Keep the newest: these are the ones in use. Drop an arbitrary older part.
                    merged = frozenset(new) | frozenset(list(self._secrets)[: _MAX_SECRETS - len(new)])
                self._secrets = frozenset(merged)

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
