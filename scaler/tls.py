"""gRPC server credentials that follow the certificate files on disk (cert-manager rotates them in place)."""

from __future__ import annotations

import logging
import os
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
        self.reloads = 0

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.files:
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_ino))
        return tuple(stamps)

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
            config = self._configuration()
        except (OSError, ValueError) as exc:
            log.warning(
                "TLS files changed but could not be read (%s); keeping the previous certificate", type(exc).__name__
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
