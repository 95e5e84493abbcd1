"""gRPC server credentials that follow the certificate files on disk (cert-manager rotates them in place).

gRPC core asks `_fetch` before every new handshake; established connections (and the streams on them)
keep the certificate they were set up with, so a rotation never drops an open StreamIsActive stream.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)


class RotatingServerCredentials:
    """Re-reads cert, key and client CA when any file changes; new handshakes use the new files."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.files = [f for f in (cert_file, key_file, client_ca_file) if f]
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._stamp = self._stamps()
        self._check()
        self.reloads = 0

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        # stat() follows symlinks: a Kubernetes Secret volume swaps its `..data` link, which changes the inode.
        stamps = []
        for path in self.files:
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(stamps)

    def _check(self) -> None:
        """Raise ssl.SSLError (an OSError) unless the key matches the certificate and the CA file parses.

        A rotation writes the files one after the other; between the two writes the pair does not match,
        and handing that to gRPC would fail every new handshake until the next change.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(self.client_ca_file)

    def _configuration(self) -> Any:
        ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        pair = (Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def _fetch(self) -> Any:
        # Called by gRPC core before handshakes; None means "keep the current configuration".
        try:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            self._check()
            config = self._configuration()
        except (OSError, ValueError) as exc:
            # The stamp is not updated, so the next handshake tries again (the rotation may be half done).
            log.warning(
                "TLS files changed but cannot be used yet (%s); keeping the previous certificate", type(exc).__name__
            )
            return None
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate files changed; new connections use the new certificate")
        return config

    def credentials(self) -> Any:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=bool(self.client_ca_file)
        )
