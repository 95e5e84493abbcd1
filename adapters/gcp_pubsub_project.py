"""The project of a short `subscriptionName` / `topicName`, found as KEDA finds it.

KEDA (pkg/scalers/gcp/gcp_stackdriver_client.go getActualProjectID) takes the project from the full
resource path, else from the client's own project (pod identity: the ambient project), else from the
credentials' `project_id`. Here: the path or `projectId`, then the credentials' `project_id` (inline
JSON at parse time, a file's once loaded), then the scaler's ambient project.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .api import InvalidMetadata
from .gcp_pubsub_metadata import UNRESOLVED_PROJECT, PubSubMetadata

AMBIENT_ENV = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
_found: dict[str, str] = {}  # "ambient" -> google-auth's default project, looked up once
_lock = asyncio.Lock()


async def resolve_project(metadata: PubSubMetadata, credentials: Any | None) -> str:
    """The project to read; InvalidMetadata naming `projectId` when none can be found."""
    project = metadata.project
    if project != UNRESOLVED_PROJECT:
        return project
    found = getattr(credentials, "project_id", None) if credentials is not None else None
    if isinstance(found, str) and found:
        return found
    project = await ambient_project()
    if project:
        return project
    key = "topicName" if metadata.is_topic else "subscriptionName"
    raise InvalidMetadata(
        "projectId",
        f"a short `{key}` needs a project: none in `projectId`, in the credentials' project_id, or in the "
        "scaler's environment (GOOGLE_CLOUD_PROJECT); give projectId or the full path",
    )


async def ambient_project() -> str:
    """The scaler's own project: GOOGLE_CLOUD_PROJECT, else google-auth's default project (found once)."""
    for name in AMBIENT_ENV:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    async with _lock:
        if "ambient" not in _found:
            # google.auth.default may read gcloud's config and, on GCE, ask the metadata server: a thread.
            _found["ambient"] = await asyncio.to_thread(_default_project)
    return _found["ambient"]


def _default_project() -> str:
    import google.auth  # deferred: slow to import, needed only for short names without a project
    import google.auth.exceptions

    try:
        _, project = google.auth.default()
    except (google.auth.exceptions.GoogleAuthError, OSError, ValueError):
        return ""
    return project if isinstance(project, str) else ""
