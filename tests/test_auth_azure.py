"""Azure workload identity against a loopback Entra ID stand-in that checks the client assertion."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.auth import AzureWorkloadIdentity, TokenCache
from adapters.auth import tokens as tokens_module
from adapters.errors import SourceUnauthenticated
from adapters.http import HttpClients
from tests.fixtures.auth_servers import EntraIdStandIn

TENANT, CLIENT = "72f988bf-0000-0000-0000-2d7cd011db47", "b5b6e1b0-0000-0000-0000-0c8a3a8a0000"
SCOPE = "https://prometheus.monitor.azure.com/.default"


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[tuple[EntraIdStandIn, dict[str, str], Path]]:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-sa-token-1")
    server = EntraIdStandIn(TENANT, CLIENT, "federated-sa-token-1")
    env = {
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": server.url + "/",
    }
    yield server, env, token_file
    server.close()


async def test_the_federated_token_buys_one_access_token_for_many_requests(
    authority: tuple[EntraIdStandIn, dict[str, str], Path], http: HttpClients
) -> None:
    server, env, _ = authority
    provider = AzureWorkloadIdentity(SCOPE, environ=env, cache=TokenCache())
    tokens = await asyncio.gather(*(provider.token(http, timeout=5) for _ in range(50)))
    assert set(tokens) == {f"aad-1-{SCOPE}"} and len(server.received) == 1
    assert server.received[0].form["scope"] == SCOPE


async def test_the_rotated_token_file_is_read_again_at_refresh(
    authority: tuple[EntraIdStandIn, dict[str, str], Path], http: HttpClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, env, token_file = authority
    provider = AzureWorkloadIdentity(SCOPE, environ=env, cache=TokenCache())
    await provider.token(http, timeout=5)
    token_file.write_text("federated-sa-token-2")  # kubelet rotated it
    server.assertion = "federated-sa-token-2"
    real = tokens_module.now
    monkeypatch.setattr(tokens_module, "now", lambda: real() + 3599 - 10)
    assert await provider.token(http, timeout=5) == f"aad-2-{SCOPE}"
    assert [r.form["client_assertion"] for r in server.received] == ["federated-sa-token-1", "federated-sa-token-2"]


async def test_a_refused_assertion_is_unauthenticated_naming_azure_and_never_the_token(
    authority: tuple[EntraIdStandIn, dict[str, str], Path], http: HttpClients
) -> None:
    server, env, _ = authority
    server.assertion = "some-other-token"
    with pytest.raises(SourceUnauthenticated) as caught:
        await AzureWorkloadIdentity(SCOPE, environ=env, cache=TokenCache()).token(http, timeout=5)
    message = caught.value.message
    assert message.startswith("Azure AD token endpoint refused the workload identity's federated token (HTTP 401")
    assert "federated-sa-token-1" not in message


def test_a_pod_without_workload_identity_is_told_which_variables_are_missing() -> None:
    with pytest.raises(SourceUnauthenticated, match="AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE"):
        AzureWorkloadIdentity(SCOPE, environ={})
