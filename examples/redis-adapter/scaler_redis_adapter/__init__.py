"""Redis adapters for keda-queue-scaler, as a third-party plugin: `redis` (list length) and `redis-streams`."""

from .lists import RedisListAdapter, RedisListMetadata
from .streams import RedisStreamsAdapter, RedisStreamsMetadata

__all__ = ["RedisListAdapter", "RedisListMetadata", "RedisStreamsAdapter", "RedisStreamsMetadata"]
