"""AWS SigV4: signatures checked by botocore's signer in a loopback source; credentials from the
environment, from a local STS (IRSA's AssumeRoleWithWebIdentity) and a local EKS Pod Identity agent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.auth import AwsCredentials, AwsSigV4, OutgoingRequest, TokenCache
from adapters.auth.request import send_json
from adapters.errors import SourcePermissionDenied, SourceUnauthenticated
from adapters.http import HttpClients, HttpEndpoint
from tests.fixtures.auth_servers import IssuedCredentials, PodIdentityAgent, SigV4Source, StsStandIn

REGION = "eu-west-1"
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TEMP = IssuedCredentials("ASIATEMPORARY", "temporary/secret+key+value", "session-token-value-123", time.time() + 3600)
ROLE = "arn:aws:iam::123456789012:role/keda-scaler"
# PromQL with spaces, '+', quotes, braces and '=': the query must arrive encoded exactly as signed.
PROMQL = 'sum(rate(http_requests_total{job="api", code=~"5.."}[5m])) + 1'


@pytest.fixture
def source() -> Iterator[SigV4Source]:
    server = SigV4Source(
        {KEY_ID: (SECRET, ""), TEMP.access_key_id: (TEMP.secret_access_key, TEMP.session_token)}, region=REGION
    )
    yield server
    server.close()


async def query(http: HttpClients, source: SigV4Source, signer: AwsSigV4) -> object:
    request = OutgoingRequest(
        "GET",
        f"{source.url}/workspaces/ws-1234/api/v1/query",
        (("query", PROMQL), ("time", "1700000000")),
        (("X-Scope-OrgID", "tenant a"),),
    )
    signed = await signer.apply(request, http, timeout=5)
    return await send_json(http, signed, endpoint=HttpEndpoint.for_url(source.url), source="AMP", timeout=5)


async def test_a_request_signed_with_environment_keys_passes_botocores_check(
    source: SigV4Source, http: HttpClients
) -> None:
    signer = AwsSigV4(REGION, environ={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert await query(http, source, signer) == {"status": "success"}
    assert source.verdicts == ["ok"]
    (received,) = source.received
    assert "x-scope-orgid" in received.headers["authorization"]  # the other providers' headers are signed too
    assert "%20" in received.query and "+" not in received.query


async def test_a_wrong_secret_is_refused_by_the_independent_check(source: SigV4Source, http: HttpClients) -> None:
    signer = AwsSigV4(REGION, static=AwsCredentials(KEY_ID, "not-the-secret-key-at-all"))
    with pytest.raises(SourcePermissionDenied):
        await query(http, source, signer)
    assert source.verdicts == ["signature mismatch"]


async def test_irsa_web_identity_is_exchanged_at_sts_once_and_signs_with_the_session_token(
    source: SigV4Source, http: HttpClients, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJ.web-identity.token\n")
    sts = StsStandIn(ROLE, "eyJ.web-identity.token", TEMP)
    env = {"AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ENDPOINT_URL_STS": sts.url}
    try:
        signer = AwsSigV4(REGION, environ=env, cache=TokenCache())
        assert signer.ambient
        with caplog.at_level(logging.DEBUG):
            answers = await asyncio.gather(*(query(http, source, signer) for _ in range(20)))
        assert answers == [{"status": "success"}] * 20 and set(source.verdicts) == {"ok"}
        assert len(sts.calls()) == 1
        assert sts.calls()[0].form["RoleSessionName"].startswith("keda-queue-scaler-")
        for secret in (TEMP.secret_access_key, TEMP.session_token, "eyJ.web-identity.token"):
            assert secret not in caplog.text
    finally:
        sts.close()


async def test_a_refused_web_identity_is_unauthenticated_naming_sts(http: HttpClients, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-token-sts-does-not-accept")
    sts = StsStandIn(ROLE, "eyJ.web-identity.token", TEMP)
    env = {"AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ENDPOINT_URL_STS": sts.url}
    try:
        with pytest.raises(SourceUnauthenticated) as caught:
            await AwsSigV4(REGION, environ=env, cache=TokenCache()).credentials(http, timeout=5)
        assert caught.value.message.startswith("AWS STS refused the web identity token")
        assert "HTTP 403" in caught.value.message and "a-token-sts-does-not-accept" not in caught.value.message
    finally:
        sts.close()


async def test_eks_pod_identity_credentials_come_from_the_agent_with_the_pod_token(
    source: SigV4Source, http: HttpClients, tmp_path: Path
) -> None:
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-token-abc")
    agent = PodIdentityAgent(
        "pod-identity-token-abc",
        IssuedCredentials(TEMP.access_key_id, TEMP.secret_access_key, TEMP.session_token, "2099-01-01T00:00:00Z"),
    )
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": agent.credentials_url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }
    try:
        signer = AwsSigV4(REGION, environ=env, cache=TokenCache())
        assert await query(http, source, signer) == {"status": "success"}
        assert await query(http, source, signer) == {"status": "success"}
        assert len(agent.received) == 1 and source.verdicts == ["ok", "ok"]
    finally:
        agent.close()


def test_no_credentials_in_the_environment_is_unauthenticated_naming_what_to_set() -> None:
    with pytest.raises(SourceUnauthenticated, match="AWS_ROLE_ARN"):
        AwsSigV4(REGION, environ={})


def test_the_signer_matches_botocore_for_a_post_with_a_body() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from adapters.auth.sigv4 import sign

    body = b"Action=ListUsers&Version=2010-05-08"
    request = OutgoingRequest(
        "POST", "https://iam.amazonaws.com/", (), (("Content-Type", "application/x-www-form-urlencoded"),), body
    )
    signed = sign(request, AwsCredentials(KEY_ID, SECRET), region="us-east-1", service="iam")
    headers = dict(signed.headers)
    theirs = AWSRequest(
        method="POST",
        url=signed.url,
        data=body,
        headers={
            "Content-Type": headers["Content-Type"],
            "X-Amz-Date": headers["X-Amz-Date"],
            "X-Amz-Content-Sha256": headers["X-Amz-Content-Sha256"],
        },
    )
    theirs.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(KEY_ID, SECRET), "iam", "us-east-1")
    expected = auth.signature(auth.string_to_sign(theirs, auth.canonical_request(theirs)), theirs)
    assert headers["Authorization"].endswith(f"Signature={expected}")
