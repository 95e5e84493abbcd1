"""Google Cloud Pub/Sub: a subscription's (or topic's) backlog or oldest-message age.

Two sources: Cloud Monitoring's PromQL API (`source: monitoring`, lags minutes, costs nothing per
message) and a peek (`source: peek`, pull without ack and release at once: exact to the second, costs one
delivery attempt per message seen). `activationSource: peek` mixes them: GetMetrics reads Monitoring,
IsActive/StreamIsActive peek at most a few messages, so a workload at zero wakes in about a second.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .api import (
    Adapter,
    AdapterContext,
    ClientPool,
    InvalidMetadata,
    SourceKey,
    SourcePermissionDenied,
    credentials_identity,
    normalize_string,
)
from .gcp_pubsub_auth import CredentialsSource, GoogleCredentials
from .gcp_pubsub_metadata import EMULATOR_ENV, UNRESOLVED_PROJECT, PubSubMetadata, is_google_endpoint
from .gcp_pubsub_monitoring import MonitoringReader
from .gcp_pubsub_peek import (
    GOOGLE_PUBSUB,
    PeekResult,
    PubSubClients,
    import_client_library,
    peek_subscription,
    peek_topic,
)
from .gcp_pubsub_project import resolve_project

_ClientKey = tuple[str, CredentialsSource | None]


class PubSubAdapter(Adapter[PubSubMetadata]):
    name = "gcp-pubsub"
    metadata_model = PubSubMetadata
    description = "Backlog or oldest-message age of a Pub/Sub subscription or topic (Cloud Monitoring PromQL or peek)"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.credentials: ClientPool[CredentialsSource, GoogleCredentials] = ClientPool(
            "credentials", self._load_credentials, _forget_credentials
        )
        self.clients: ClientPool[_ClientKey, PubSubClients] = ClientPool("grpc", self._create_clients, _close_clients)
        self.pools = [self.clients, self.credentials]
        self.monitoring = MonitoringReader(context.http)

    # --- what is measured ----------------------------------------------------------------------

    def source_key(self, metadata: PubSubMetadata) -> SourceKey:
        if metadata.effective_source == "peek":
            return self._peek_key(metadata, metadata.peek_limit)
        return SourceKey(
            adapter=self.name,
            endpoint=metadata.monitoring_url,
            object=metadata.path,
            mode=metadata.mode,
            identity=self._identity(metadata),
            options=(
                ("source", "monitoring"),
                ("aggregation", metadata.aggregation),
                ("timeHorizon", repr(metadata.time_horizon_seconds)),
                ("valueIfNull", "" if metadata.value_if_null is None else repr(metadata.value_if_null)),
                ("staleness", repr(metadata.staleness)),
            ),
        )

    def uses_ambient_credentials(self, metadata: PubSubMetadata) -> bool:
        # No key of its own: google-auth's ADC, i.e. the scaler pod's Workload Identity.
        return not (metadata.credentials.get_secret_value() or metadata.credentials_file)

    def activation_source_key(self, metadata: PubSubMetadata) -> SourceKey | None:
        if metadata.activation_source != "peek" or metadata.effective_source == "peek":
            return None
        return self._peek_key(metadata, self._activation_limit(metadata))

    def _peek_key(self, metadata: PubSubMetadata, limit: int) -> SourceKey:
        return SourceKey(
            adapter=self.name,
            endpoint=_pubsub_target(),
            object=metadata.path,
            mode=metadata.mode,
            identity=self._identity(metadata),
            options=(("source", "peek"), ("peekLimit", str(limit))),
        )

    @staticmethod
    def _identity(metadata: PubSubMetadata) -> str:
        return credentials_identity(metadata.credentials.get_secret_value(), _credentials_file(metadata))

    @staticmethod
    def _activation_limit(metadata: PubSubMetadata) -> int:
        # Enough messages to cross the activation threshold and no more: one, with the default of 0.
        if metadata.mode == "NumUndeliveredMessages":
            return max(1, min(metadata.peek_limit, math.floor(metadata.activation_value) + 1))
        return 1 if metadata.activation_value == 0 else metadata.peek_limit

    def metric_name_hint(self, metadata: PubSubMetadata) -> str:
        return metadata.short_name

    def keda_metric_name(self, metadata: PubSubMetadata) -> str:
        return normalize_string(f"gcp-ps-{metadata.resource}")

    # --- reading -------------------------------------------------------------------------------

    async def measure(self, metadata: PubSubMetadata) -> float:
        if metadata.effective_source == "peek":
            return self._reading(metadata, await self._peek(metadata, metadata.peek_limit))
        source = _credentials_source(metadata)
        google = is_google_endpoint(metadata.monitoring_url)
        if google and not metadata.monitoring_url.startswith("https://"):  # the model refuses it; never in clear
            raise SourcePermissionDenied("monitoringAddress: Google credentials are sent over https:// only")
        credentials = None
        # Credentials are loaded for Google's endpoint, or to find a short name's project in a key file;
        # ADC's own project is the ambient project, found without loading anything.
        if google or (metadata.project == UNRESOLVED_PROJECT and (source.info or source.file)):
            credentials = await self.credentials.get(source)
        project = await resolve_project(metadata, credentials.credentials if credentials else None)
        token = credentials.token if credentials is not None and google else None
        self.monitoring.prune()
        return await self.monitoring.read(
            metadata, project, self._identity(metadata), self.context.default_timeout, token
        )

    async def measure_activation(self, metadata: PubSubMetadata) -> float:
        if self.activation_source_key(metadata) is None:
            return await self.measure(metadata)
        return self._reading(metadata, await self._peek(metadata, self._activation_limit(metadata)))

    async def _peek(self, metadata: PubSubMetadata, limit: int) -> PeekResult:
        target = _pubsub_target()
        credentials = None if os.environ.get(EMULATOR_ENV) else _credentials_source(metadata)
        clients = await self.clients.get((target, credentials))
        loaded = None
        if credentials is not None and metadata.project == UNRESOLVED_PROJECT:
            loaded = (await self.credentials.get(credentials)).credentials
        path = metadata.path_in(await resolve_project(metadata, loaded))
        timeout = self.context.default_timeout
        if metadata.is_topic:
            return await peek_topic(clients, path, limit, timeout)
        return await peek_subscription(clients, path, limit, timeout)

    @staticmethod
    def _reading(metadata: PubSubMetadata, result: PeekResult) -> float:
        return float(result.count) if metadata.mode == "NumUndeliveredMessages" else result.oldest_age

    async def _load_credentials(self, source: CredentialsSource) -> GoogleCredentials:
        # Token requests of inline keys go through the resolve hook: to the addresses the egress check approved.
        return await GoogleCredentials.load(source, self.context.resolve, self.context.http)

    async def _create_clients(self, key: _ClientKey) -> PubSubClients:
        target, source = key
        credentials = None if source is None else await self.credentials.get(source)
        await import_client_library()
        return PubSubClients(target, credentials)

    async def close_idle(self, max_idle: float) -> int:
        self.monitoring.prune()
        return await super().close_idle(max_idle)


def _pubsub_target() -> str:
    # The emulator is chosen by the scaler's own environment, as every Google client library does.
    return os.environ.get(EMULATOR_ENV) or GOOGLE_PUBSUB


def _credentials_source(metadata: PubSubMetadata) -> CredentialsSource:
    return CredentialsSource(metadata.credentials.get_secret_value(), _credentials_file(metadata))


def _credentials_file(metadata: PubSubMetadata) -> str:
    """`credentialsFile`, or the path held by the scaler's variable named in `credentialsFromEnvFile`.

    KEDA resolves that variable in the scale target's container, which it does not do for an external
    scaler: the value arrives as the variable's name, so it is read from the scaler's own environment.
    """
    if metadata.credentials_from_env_file:
        path = os.environ.get(metadata.credentials_from_env_file, "").strip()
        if not path:
            raise InvalidMetadata(
                "credentialsFromEnvFile",
                f"the scaler's environment has no variable {metadata.credentials_from_env_file} naming a file",
            )
        return path
    return metadata.credentials_file


async def _close_clients(clients: PubSubClients) -> None:
    await clients.close()


async def _forget_credentials(credentials: Any) -> None:
    """Credentials hold no connection: dropping the object is all there is to closing them."""
