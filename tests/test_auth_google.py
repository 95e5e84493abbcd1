"""Google: a service account key exchanged at a loopback token endpoint that verifies the JWT signature
with the key's public half; ambient ADC through google-auth with no metadata server reachable."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.auth import GoogleDefaultCredentials, GoogleServiceAccount, TokenCache
from adapters.errors import InvalidMetadata, SourceUnauthenticated
from adapters.http import HttpClients
from tests.fixtures.auth_servers import GoogleTokenEndpoint
from tests.fixtures.pubsub import PROJECT, google_isolated_env, service_account_key

EMAIL = f"scaler@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def google(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GoogleTokenEndpoint, str, str]]:
    for key, value in google_isolated_env().items():
        monkeypatch.setenv(key, value)
    placeholder, pem = service_account_key("key-1", "http://127.0.0.1:1/token")
    server = GoogleTokenEndpoint(pem, EMAIL)
    document = json.loads(placeholder) | {"token_uri": server.token_url}
    yield server, json.dumps(document), pem
    server.close()


async def test_a_service_account_key_gets_one_token_signed_by_its_key(
    google: tuple[GoogleTokenEndpoint, str, str], http: HttpClients, caplog: pytest.LogCaptureFixture
) -> None:
    server, key, pem = google
    provider = GoogleServiceAccount(key, cache=TokenCache())
    with caplog.at_level(logging.DEBUG):
        tokens = await asyncio.gather(*(provider.token(http, timeout=5) for _ in range(30)))
    assert set(tokens) == {"ya29.token-1"} and len(server.received) == 1
    (claims,) = server.claims
    assert claims["scope"] == "https://www.googleapis.com/auth/monitoring.read" and claims["iss"] == EMAIL
    assert provider.addresses() == [("credentials", server.token_url)]
    secret_line = pem.splitlines()[1]
    for text in (caplog.text, repr(provider), str(provider), provider.identity):
        assert secret_line not in text


async def test_a_key_google_refuses_is_unauthenticated_naming_the_provider(
    google: tuple[GoogleTokenEndpoint, str, str], http: HttpClients
) -> None:
    server, _, _ = google
    other, _ = service_account_key("key-2", server.token_url)  # a different private key for the same account
    with pytest.raises(SourceUnauthenticated) as caught:
        await GoogleServiceAccount(other, cache=TokenCache()).token(http, timeout=5)
    assert caught.value.message.startswith(f"Google token endpoint refused the service account key of {EMAIL}")
    assert "HTTP 400: invalid_grant" in caught.value.message


@pytest.mark.parametrize("token_uri", ["http://oauth2.example.com/token", "http://localhost:8080/token"])
def test_a_token_uri_over_plain_http_is_refused_unless_a_loopback_ip(token_uri: str) -> None:
    key, _ = service_account_key("key-3", token_uri)
    with pytest.raises(InvalidMetadata, match=r"credentials.*only over https://"):
        GoogleServiceAccount(key)


def test_a_key_that_is_not_json_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidMetadata) as caught:
        GoogleServiceAccount("-----BEGIN PRIVATE KEY----- not json")
    assert "BEGIN" not in caught.value.message


async def test_ambient_adc_is_refreshed_by_google_auth_through_the_file_it_names(
    google: tuple[GoogleTokenEndpoint, str, str], http: HttpClients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, key, _ = google
    path = tmp_path / "adc.json"
    path.write_text(key)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    provider = GoogleDefaultCredentials(cache=TokenCache())
    assert provider.ambient
    assert await provider.token(http, timeout=10) == "ya29.token-1"
    assert await provider.token(http, timeout=10) == "ya29.token-1"
    assert len(server.received) == 1


async def test_no_ambient_credentials_is_unauthenticated_without_reaching_a_metadata_server(
    google: tuple[GoogleTokenEndpoint, str, str], http: HttpClients
) -> None:
    with pytest.raises(SourceUnauthenticated, match="Google Application Default Credentials"):
        await GoogleDefaultCredentials(cache=TokenCache()).token(http, timeout=10)
