"""Reading the small token files ambient identities rotate (EKS, AKS), off the event loop and bounded."""

from __future__ import annotations

import asyncio
import os
import stat

from ..errors import SourceUnauthenticated

MAX_TOKEN_FILE = 64 * 1024  # a projected service account token is ~1-2 KiB


def _read(path: str, what: str) -> str:
    try:
        info = os.stat(path)
        # A FIFO or device would block the worker forever; a huge file is not a token.
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TOKEN_FILE:
            raise SourceUnauthenticated(f"{what} {path} is not a regular file of at most {MAX_TOKEN_FILE // 1024} KiB")
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_TOKEN_FILE).strip()
    except OSError as exc:
        raise SourceUnauthenticated(f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise SourceUnauthenticated(f"{what} {path} is not text") from None
    if not text:
        raise SourceUnauthenticated(f"{what} {path} is empty")
    return text


async def read_token_file(path: str, what: str) -> str:
    """Read every time a token is fetched: kubelet rotates these files, so a cached copy goes stale."""
    return await asyncio.to_thread(_read, path, what)
