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

    redact() costs one dictionary lookup per position of the text, however many secrets there are: each
    secret is indexed by its first _MIN_SECRET_LEN characters, and only where such a prefix occurs are the
    lengths of the secrets with that prefix tried (longest first). Looping over every secret cost 3 ms per
    log line with thousands registered (bench/redaction.py).

    Thread-safe because the logging filter may run on grpc's threads: writers hold the lock; redact()
    takes none and only looks up keys, which CPython's dicts answer atomically while a writer changes them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}  # insertion-ordered: the oldest is evicted first
        # prefix -> lengths of the secrets with that prefix, longest first (what redact() reads), and the
        # writers' count of secrets per (prefix, length), to know when a length goes away.
        self._lengths: dict[str, tuple[int, ...]] = {}
        self._counts: dict[str, dict[int, int]] = {}

    def __len__(self) -> int:
        return len(self._secrets)

    def add(self, *values: str) -> None:
        new = [v for v in values if v and len(v) >= _MIN_SECRET_LEN]
        if not new:
            return
        with self._lock:
            for secret in new:
                if secret in self._secrets:
                    del self._secrets[secret]  # seen again: in use, so the newest
                    self._secrets[secret] = None
                    continue
                self._secrets[secret] = None
                self._count(secret, +1)
            while len(self._secrets) > _MAX_SECRETS:
                oldest = next(iter(self._secrets))
                self._count(oldest, -1)
                del self._secrets[oldest]

    def _count(self, secret: str, change: int) -> None:
        prefix, length = secret[:_MIN_SECRET_LEN], len(secret)
        counts = self._counts.setdefault(prefix, {})
        counts[length] = counts.get(length, 0) + change
        if counts[length] <= 0:
            del counts[length]
        if counts:
            self._lengths[prefix] = tuple(sorted(counts, reverse=True))
        else:
            del self._counts[prefix]
            self._lengths.pop(prefix, None)

    def redact(self, text: str) -> str:
        text = _USERINFO.sub(r"\g<scheme>***@", text)
        lengths, secrets, width = self._lengths, self._secrets, _MIN_SECRET_LEN
        starts = range(len(text) - width + 1)
        if not lengths:
            return text
        # First pass at C speed (no Python frame per position): most lines hold no secret's prefix at all.
        windows = map(text.__getitem__, map(slice, starts, range(width, len(text) + 1)))
        if lengths.keys().isdisjoint(windows):
            return text
        spans: list[tuple[int, int]] = []
        for start in starts:
            for length in lengths.get(text[start : start + width], ()):
                if text[start : start + length] in secrets:
                    # The longest secret starting here; a shorter one starting here lies inside it.
                    spans.append((start, start + length))
                    break
        return _mask(text, spans)


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with every span replaced by ***; overlapping or touching spans become one ***, so that
    no character of any secret survives (replacing one secret at a time left the tail of an overlapping one)."""
    if not spans:
        return text
    parts, kept_until, run_end = [], 0, -1
    for start, end in spans:  # in order of start
        if start > run_end:
            if run_end >= 0:
                parts.append("***")
            parts.append(text[kept_until:start])
            run_end = end
        else:
            run_end = max(run_end, end)
        kept_until = run_end
    parts.append("***")
    parts.append(text[kept_until:])
    return "".join(parts)


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
