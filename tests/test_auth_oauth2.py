"""OAuth2 client credentials against a loopback token endpoint that checks the grant and counts requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from adapters.auth import OAuth2ClientCredentials, OutgoingRequest, Token, TokenCache
from adapters.auth import tokens as tokens_module
from adapters.auth.request import send_authenticated, send_json
from adapters.errors import SourceUnauthenticated
from adapters.http import HttpClients, HttpEndpoint
from tests.fixtures.auth_servers import OAuth2TokenEndpoint, RecordingSource

CLIENT_ID = "scaler-client"
SECRET = "s3cret+client/secret=="  # characters RFC 6749 2.3.1 says to form-encode before Basic


class Clock:
    """Moves the token cache's clock, so expiry is tested without sleeping."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = tokens_module.now
        monkeypatch.setattr(tokens_module, "now", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def endpoint() -> Iterator[OAuth2TokenEndpoint]:
    server = OAuth2TokenEndpoint(CLIENT_ID, SECRET)
    yield server
    server.close()


def provider(endpoint: OAuth2TokenEndpoint, **options: object) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(endpoint.token_url, CLIENT_ID, SECRET, cache=TokenCache(), **options)  # type: ignore[arg-type]


async def query(http: HttpClients, source: RecordingSource, auth: OAuth2ClientCredentials) -> object:
    request = await auth.apply(
        OutgoingRequest("GET", f"{source.url}/api/v1/query", (("query", "up"),)), http, timeout=5
    )
    return await send_json(http, request, endpoint=HttpEndpoint.for_url(source.url), source="source", timeout=5)


async def test_a_hundred_concurrent_requests_fetch_one_token(
    endpoint: OAuth2TokenEndpoint, recording_source: RecordingSource, http: HttpClients
) -> None:
    auth = provider(endpoint)
    recording_source.accepted = {f"Bearer access-1-{'x' * 16}"}
    answers = await asyncio.gather(*(query(http, recording_source, auth) for _ in range(100)))
    assert answers == [{"status": "success"}] * 100
    assert len(endpoint.grants()) == 1
    assert {r.headers["authorization"] for r in recording_source.received} == recording_source.accepted


async def test_the_grant_carries_the_client_scopes_and_endpoint_params(
    endpoint: OAuth2TokenEndpoint, http: HttpClients
) -> None:
    auth = provider(endpoint, scopes=["read", " metrics "], endpoint_params=[("audience", "prometheus")])
    await auth.token(http, timeout=5)
    (grant,) = endpoint.grants()
    assert grant.form == {"grant_type": "client_credentials", "scope": "read metrics", "audience": "prometheus"}
    assert grant.headers["content-type"] == "application/x-www-form-urlencoded"
    assert grant.headers["authorization"].startswith("Basic ")


async def test_the_token_is_reused_until_shortly_before_expiry_then_refreshed_once(
    endpoint: OAuth2TokenEndpoint, http: HttpClients, clock: Clock
) -> None:
    auth = provider(endpoint)
    first = await auth.token(http, timeout=5)
    clock.advance(3000)  # 50 min of a 60 min token: still reused
    assert await auth.token(http, timeout=5) == first
    assert len(endpoint.grants()) == 1
    clock.advance(3600 - 3000 - 30)  # 30 s before expiry: inside the 60 s refresh window
    tokens = await asyncio.gather(*(auth.token(http, timeout=5) for _ in range(20)))
    assert len(endpoint.grants()) == 2
    assert set(tokens) <= {first, endpoint.issued[1]}
    assert await auth.token(http, timeout=5) == endpoint.issued[1]


async def test_a_failed_refresh_keeps_the_still_valid_token_and_does_not_retry_every_query(
    endpoint: OAuth2TokenEndpoint, http: HttpClients, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = provider(endpoint)
    first = await auth.token(http, timeout=5)
    endpoint.refuse_with = 503
    clock.advance(3600 - 30)
    with caplog.at_level(logging.DEBUG):
        assert await auth.token(http, timeout=5) == first
        assert await auth.token(http, timeout=5) == first
    assert len(endpoint.grants()) == 2  # one failed refresh, then the back-off
    assert "refreshing the token failed" in caplog.text
    assert SECRET not in caplog.text and first not in caplog.text
    endpoint.refuse_with = None
    clock.advance(10)
    assert await auth.token(http, timeout=5) == endpoint.issued[1]


async def test_refused_client_credentials_are_unauthenticated_naming_the_provider(
    endpoint: OAuth2TokenEndpoint, http: HttpClients, caplog: pytest.LogCaptureFixture
) -> None:
    auth = OAuth2ClientCredentials(endpoint.token_url, CLIENT_ID, "wrong-secret-value", cache=TokenCache())
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceUnauthenticated) as caught:
        await auth.token(http, timeout=5)
    message = caught.value.message
    assert message.startswith("OAuth2 token endpoint refused the client credentials (HTTP 401")
    assert caught.value.status == "UNAUTHENTICATED"
    for text in (message, caplog.text, repr(auth), str(auth)):
        assert "wrong-secret-value" not in text and SECRET not in text


async def test_an_expired_token_is_never_sent(endpoint: OAuth2TokenEndpoint, http: HttpClients, clock: Clock) -> None:
    auth = provider(endpoint)
    first = await auth.token(http, timeout=5)
    endpoint.refuse_with = 401
    clock.advance(3601)
    with pytest.raises(SourceUnauthenticated):
        await auth.token(http, timeout=5)
    endpoint.refuse_with = None
    assert await auth.token(http, timeout=5) == endpoint.issued[1] != first


async def test_an_endpoint_that_wants_credentials_in_the_body_gets_them_there(http: HttpClients) -> None:
    server = OAuth2TokenEndpoint(CLIENT_ID, SECRET, body_only=True)
    try:
        auth = provider(server)
        await auth.token(http, timeout=5)
        grants = server.grants()
        assert len(grants) == 2 and grants[1].form["client_id"] == CLIENT_ID
        assert grants[1].form["client_secret"] == SECRET and "authorization" not in grants[1].headers
    finally:
        server.close()


async def test_triggers_with_the_same_credentials_share_one_token(
    endpoint: OAuth2TokenEndpoint, http: HttpClients
) -> None:
    cache = TokenCache()
    one = OAuth2ClientCredentials(endpoint.token_url, CLIENT_ID, SECRET, cache=cache)
    two = OAuth2ClientCredentials(endpoint.token_url, CLIENT_ID, SECRET, cache=cache)
    other = OAuth2ClientCredentials(endpoint.token_url, CLIENT_ID, SECRET, scopes=["write"], cache=cache)
    assert await one.token(http, timeout=5) == await two.token(http, timeout=5)
    await other.token(http, timeout=5)
    assert len(endpoint.grants()) == 2
    assert one.identity == two.identity != other.identity and SECRET not in one.identity


async def test_a_token_the_source_refuses_is_unauthenticated_naming_the_provider_and_is_not_reused(
    endpoint: OAuth2TokenEndpoint, recording_source: RecordingSource, http: HttpClients
) -> None:
    auth = provider(endpoint)
    request = OutgoingRequest("GET", f"{recording_source.url}/api/v1/query", (("query", "up"),))
    target = HttpEndpoint.for_url(recording_source.url)
    with pytest.raises(SourceUnauthenticated) as caught:  # the source accepts no token yet: as if revoked
        await send_authenticated(http, request, [auth], endpoint=target, source="Prometheus", timeout=5)
    assert caught.value.message == (
        "Prometheus answered HTTP 401: unauthorized (credentials sent: OAuth2 token endpoint)"
    )
    recording_source.accepted = {f"Bearer {endpoint.issued[0]}", "Bearer access-2-xxxxxxxxxxxxxxxx"}
    assert await send_authenticated(http, request, [auth], endpoint=target, source="Prometheus", timeout=5)
    assert len(endpoint.grants()) == 2
    assert recording_source.received[-1].headers["authorization"] == "Bearer access-2-xxxxxxxxxxxxxxxx"


async def test_a_caller_cancelled_mid_fetch_does_not_cancel_the_fetch_others_wait_for(
    endpoint: OAuth2TokenEndpoint, http: HttpClients
) -> None:
    auth = provider(endpoint)
    first = asyncio.ensure_future(auth.token(http, timeout=5))
    others = [asyncio.ensure_future(auth.token(http, timeout=5)) for _ in range(5)]
    await asyncio.sleep(0)  # let the first caller start the shared fetch
    first.cancel()
    assert set(await asyncio.gather(*others)) == {endpoint.issued[0]}
    assert len(endpoint.grants()) == 1


async def test_the_cache_keeps_a_bounded_number_of_identities() -> None:
    cache = TokenCache(max_entries=3)

    async def fetch() -> Token[str]:
        return Token.lasting("t", 60)

    for n in range(10):
        await cache.get(f"identity-{n}", fetch, name="test")
    assert [cache.fetches(f"identity-{n}") for n in range(10)] == [0] * 7 + [1] * 3
