"""`adapter: redis`: the length of a Redis list, with the keys of KEDA's redis scaler."""

from __future__ import annotations

from pydantic import Field

from adapters.api import SourceKey

from .connection import RedisAdapter, RedisConnectionMetadata, translate


class RedisListMetadata(RedisConnectionMetadata):
    """Trigger metadata for `adapter: redis` (names as in KEDA's redis scaler)."""

    target_key = "listLength"
    activation_key = "activationListLength"
    # What a trigger may add to a named connection: the list. Not the database (another tenant's data).
    object_keys = ("listName",)

    list_name: str = Field(min_length=1, description="The list whose length is read (LLEN); a missing list reads 0")
    list_length: float = Field(5.0, description="Target list length per replica (HPA target); must be > 0")
    activation_list_length: float = Field(0.0, description="Active when the length is strictly greater than this")


class RedisListAdapter(RedisAdapter[RedisListMetadata]):
    name = "redis"
    metadata_model = RedisListMetadata
    description = "The length of a Redis list (LLEN), as KEDA's redis scaler reads it"

    def source_key(self, metadata: RedisListMetadata) -> SourceKey:
        return SourceKey(
            adapter=self.name,
            endpoint=metadata.endpoint,
            object=metadata.list_name,
            mode="llen",
            identity=self.identity(metadata),
            options=metadata.tls_options,
        )

    async def measure(self, metadata: RedisListMetadata) -> float:
        from redis.exceptions import RedisError  # imported by the first reading, not at start-up

        client = await self.client(metadata)
        try:
            length = await client.llen(metadata.list_name)
        except RedisError as exc:
            raise translate(exc, f"list '{metadata.list_name}' on {metadata.endpoint}") from None
        return float(length)
