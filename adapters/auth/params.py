"""Reading KEDA-style auth parameters: empty or whitespace counts as absent, aliases resolve in order."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from ..errors import InvalidMetadata
from ..sources import credentials_identity
from .request import AuthProvider

# The managed offerings' hosts: cloud credentials (above all the pod's own) must never go to a host a
# tenant chose. The operator may add hosts (a proxy, a test stand-in).
GOOGLE_HOSTS = ("monitoring.googleapis.com",)
AZURE_HOST_SUFFIXES = (".prometheus.monitor.azure.com", ".prometheus.monitor.azure.us", ".prometheus.monitor.azure.cn")
AWS_HOST_PREFIX, AWS_HOST_SUFFIX = "aps-workspaces.", ".amazonaws.com"
# The operator's extra hosts (setting auth_cloud_hosts), set once at start by the server. A process-wide
# value rather than an argument: metadata models validate without the engine's context, and the answer
# must be the same wherever a model is parsed (GetMetricSpec, `scaler check`, a named connection).
_operator_hosts: list[tuple[str, ...]] = [()]


def set_cloud_hosts(hosts: tuple[str, ...] | list[str]) -> None:
    _operator_hosts[0] = tuple(h.strip().lower() for h in hosts if h.strip())


def cloud_hosts() -> tuple[str, ...]:
    return _operator_hosts[0]


def get(values: Mapping[str, str], *names: str) -> str:
    """The first of `names` with a non-blank value (KEDA's `name=a;b` aliases), stripped; else ''."""
    for name in names:
        value = values.get(name, "")
        if value.strip():
            return value.strip()
    return ""


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def endpoint_params(text: str) -> list[tuple[str, str]]:
    """KEDA parses `endpointParams` with Go's url.ParseQuery (`audience=x&resource=y`), which refuses ';'."""
    if ";" in text:
        raise InvalidMetadata("endpointParams", "expected a URL query such as audience=api&resource=x (no ';')")
    return parse_qsl(text, keep_blank_values=True)


def combined_identity(providers: list[AuthProvider], *extra: str) -> str:
    return credentials_identity(*(p.identity for p in providers), *extra)


def check_cloud_host(url: str, cloud: str, extra_hosts: tuple[str, ...], *, key: str = "serverAddress") -> None:
    host = (urlsplit(url).hostname or "").lower()
    if urlsplit(url).scheme != "https" and host not in extra_hosts:
        raise InvalidMetadata(key, f"{cloud} credentials are sent only over https://")
    if host in extra_hosts:
        return
    if cloud == "Google" and host in GOOGLE_HOSTS:
        return
    if cloud == "Azure" and host.endswith(AZURE_HOST_SUFFIXES):
        return
    if cloud == "AWS" and host.startswith(AWS_HOST_PREFIX) and host.endswith(AWS_HOST_SUFFIX):
        return
    raise InvalidMetadata(
        key,
        f"{cloud} credentials are sent only to {cloud}'s managed Prometheus endpoint "
        "(or to a host the operator lists in auth_cloud_hosts), not to '" + host[:100] + "'",
    )
