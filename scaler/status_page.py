"""GET /status (HTML) and /status.json: the StatusBoard as a page people look at.

Everything on the page is tenant input (names, queues, queries, error messages). The page's script builds
the table with textContent and DOM calls only, never markup from data, and the Content-Security-Policy
allows no script or style but the page's own (a fresh nonce per response), no other origin, no framing.
"""

from __future__ import annotations

import json
import secrets
from importlib.resources import files
from urllib.parse import parse_qs

from .metrics import ScalerMetrics
from .status import StatusBoard

Headers = tuple[tuple[str, str], ...]
_TEMPLATE = files("scaler").joinpath("static/status.html").read_text(encoding="utf-8")
_NONCE = "__NONCE__"
_MAX_LIMIT = 5000
_COMMON: Headers = (
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
)


def csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class StatusPage:
    def __init__(self, board: StatusBoard, metrics: ScalerMetrics) -> None:
        self.board = board
        self.metrics = metrics

    def html(self) -> tuple[bytes, Headers]:
        nonce = secrets.token_urlsafe(18)
        body = _TEMPLATE.replace(_NONCE, nonce).encode()
        return body, (("Content-Security-Policy", csp(nonce)), ("X-Frame-Options", "DENY"), *_COMMON)

    def json(self, query: str) -> tuple[bytes, Headers]:
        params = parse_qs(query, max_num_fields=10)
        namespace = params.get("namespace", [""])[0][:253]
        errors = params.get("errors", [""])[0] in ("1", "true", "on")
        try:
            limit = max(1, min(_MAX_LIMIT, int(params.get("limit", ["500"])[0])))
        except ValueError:
            limit = 500
        data = self.board.snapshot(
            namespace=namespace, errors_only=errors, limit=limit, cache_hit_ratio=self.cache_hit_ratio()
        )
        return json.dumps(data, separators=(",", ":")).encode(), _COMMON

    def cache_hit_ratio(self) -> float | None:
        counts = self.metrics.calls.cache
        total = sum(counts.values())
        # Coalesced calls shared a query in flight: they did not cost the source one, so they count as hits.
        return None if not total else round((counts.get("hit", 0.0) + counts.get("coalesced", 0.0)) / total, 4)
