"""Structured logs: one line per event, ScaledObject and adapter as fields, secrets redacted at the last step."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from adapters.api import redact

# Fields callers pass with `extra=` that belong in the structured line.
CONTEXT_FIELDS = ("namespace", "scaledobject", "adapter", "source", "method", "code", "metric")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        # Context fields (KEDA's namespace and name, adapter, method, code) are never secrets, and are not
        # redacted: a trigger whose "password" equals its namespace must not hide that namespace from the log.
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = redact(value) if name == "source" else value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        context = " ".join(
            f"{name}={redact(str(value)) if name == 'source' else value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        return f"{text} {context}" if context else text


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' own chatter (per-request lines, connection details) stays out unless debugging.
    for noisy in ("aiohttp", "httpx", "httpcore", "aio_pika", "aiormq", "pika", "grpc", "google", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
