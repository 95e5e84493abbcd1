"""KEDA's rabbitmq auth-parameter parse tests, row for row, through a real scaler's GetMetricSpec.

Rows: kedacore/keda pkg/scalers/rabbitmq_scaler_test.go `testRabbitMQAuthParamData` at commit
8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a (KEDA's answer: `isError` after parse and Validate()). KEDA takes
these from a TriggerAuthentication, which it does not forward to external scalers: here they are metadata
(a named connection's, in practice). KEDA's pod identity becomes the `podIdentity` key.
"""

from __future__ import annotations

from tests.fixtures.keda_parity import Row, as_sent, ask, check
from tests.fixtures.scaler import ScalerProcess

H = "myHostSecret"
RESOLVED_ENV = {H: "amqp://user:sercet@somehost.com:5236/vhost", "myUsername": "user", "myPassword": "PASSWORD"}
E = {"queueName": "sample", "hostFromEnv": H}
HTTP = {"queueName": "sample", "host": "http://localhost:15672", "protocol": "http"}
OAUTH = {"oauthTokenURI": "https://oauth.example.com/token", "clientID": "my-client", "clientSecret": "my-secret"}
WI = {"podIdentity": "azure-workload", "workloadIdentityResource": "rabbitmq-resource-id"}


def r(name: str, metadata: dict[str, str], auth: dict[str, str], keda_accepts: bool) -> Row:
    return Row(name, metadata, auth, keda_accepts)


ROWS = [
    r("tls with ca, cert and key", E, {"tls": "enable", "ca": "caaa", "cert": "ceert", "key": "keey"}, True),
    r("tls cert/key, public CA", E, {"tls": "enable", "cert": "ceert", "key": "keey"}, True),
    r("tls cert/key + key password", E, {"tls": "enable", "cert": "ceert", "key": "keey", "keyPassword": "kp"}, True),
    r("tls CA only", E, {"tls": "enable", "ca": "caaa"}, True),
    r("tls missing cert", E, {"tls": "enable", "ca": "caaa", "key": "kee"}, False),
    r("tls missing key", E, {"tls": "enable", "ca": "caaa", "cert": "ceert"}, False),
    r("tls invalid", E, {"tls": "yes", "ca": "caaa", "cert": "ceert", "key": "kee"}, False),
    r("username and password", E, {"username": "user", "password": "PASSWORD"}, True),
    r("username but no password", E, {"username": "user"}, False),
    r("password but no username", E, {"password": "PASSWORD"}, False),
    r("vhostName", E, {"vhostName": "myVhost"}, True),
    r("vhostName but empty", E, {"vhostName": ""}, True),
    r(
        "username and password from env",
        {**E, "usernameFromEnv": "myUsername", "passwordFromEnv": "myPassword"},
        {},
        True,
    ),
    r("username from env but not password", {**E, "usernameFromEnv": "myUsername"}, {}, False),
    r("password from env but not username", {**E, "passwordFromEnv": "myPassword"}, {}, False),
    r("workload identity", {**E, "protocol": "http"}, WI, True),
    r("workload identity over amqp", {**E, "protocol": "amqp"}, WI, False),
    r("oauth2 over http, minimal", HTTP, OAUTH, True),
    r(
        "oauth2 with scopes",
        {**HTTP, "host": "https://localhost:15672"},
        {**OAUTH, "scopes": "rabbitmq.read,rabbitmq.write"},
        True,
    ),
    r("oauth2 with endpoint params", HTTP, {**OAUTH, "endpointParams": "audience=rabbitmq&resource=api"}, True),
    r("oauth2 with tls", {**HTTP, "host": "https://localhost:15672"}, {**OAUTH, "tls": "enable", "ca": "caaa"}, True),
    r("oauth2 over amqp", {"queueName": "sample", "host": "amqp://localhost:5672", "protocol": "amqp"}, OAUTH, False),
    r("oauth2 with basic auth", HTTP, {**OAUTH, "username": "user", "password": "pass"}, False),
    r("oauth2 with workload identity", HTTP, {**OAUTH, "workloadIdentityResource": "rabbitmq-resource-id"}, False),
    r("oauth2 missing token URL", HTTP, {"clientID": "my-client", "clientSecret": "my-secret"}, False),
    r("oauth2 missing client id", HTTP, {"oauthTokenURI": OAUTH["oauthTokenURI"], "clientSecret": "my-secret"}, False),
    r("oauth2 missing client secret", HTTP, {"oauthTokenURI": OAUTH["oauthTokenURI"], "clientID": "my-client"}, False),
]

DIFFERENCES = {
    # The same deliberate difference as in testRabbitMQMetadata's "protocol defined in authParams".
    "workload identity": "`protocol: http` against an amqp:// host is refused at GetMetricSpec; KEDA accepts it "
    "and fails on every read",
}


def test_every_keda_auth_row_gets_kedas_answer_or_a_listed_difference(scaler: ScalerProcess) -> None:
    outcomes = [(row, ask(scaler, as_sent(row, RESOLVED_ENV, "rabbitmq"))) for row in ROWS]
    agreed = [check(row, outcome, DIFFERENCES) for row, outcome in outcomes]
    assert sum(agreed) == len(ROWS) - len(DIFFERENCES) == 26
