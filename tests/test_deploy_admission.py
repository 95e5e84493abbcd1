"""The ValidatingAdmissionPolicy's CEL, evaluated with a CEL library the way the API server does.

The API server evaluates `spec.variables` in order (each may use the earlier ones), then each validation;
a validation that is false denies the request with its messageExpression (or message). The examples must
pass; crafted bad objects must fail with the message that tells the user what to fix. Schema validity of
the rendered policy and binding is covered by test_deploy_manifests (kubernetes-validate, Kubernetes 1.30+).
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import celpy
import pytest
from celpy import celtypes

from adapters.api import describe_fields, discover_adapter_classes

from .fixtures._manifests import ROOT, example_objects, find, render, scaler_triggers

REQUIRED_LABEL = "keda-queue-scaler/named-connections"
POLICY = "keda-queue-scaler-triggers"
WARNINGS = "keda-queue-scaler-trigger-warnings"


class AdmissionPolicy:
    def __init__(self, policy: dict[str, Any]) -> None:
        self.env = celpy.Environment()
        self.variables = [(v["name"], self._compile(v["expression"])) for v in policy["spec"]["variables"]]
        self.validations = [
            (
                self._compile(v["expression"]),
                v.get("message", ""),
                self._compile(v["messageExpression"]) if "messageExpression" in v else None,
            )
            for v in policy["spec"]["validations"]
        ]

    def _compile(self, expression: str) -> Any:
        return self.env.program(self.env.compile(expression))

    def variable(self, name: str, obj: dict[str, Any], namespace_labels: dict[str, str] | None = None) -> Any:
        return self._activation(obj, namespace_labels)["variables"][celtypes.StringType(name)]

    def _activation(self, obj: dict[str, Any], namespace_labels: dict[str, str] | None) -> dict[str, Any]:
        namespace: dict[str, Any] = {"metadata": {"name": obj["metadata"].get("namespace", "default")}}
        if namespace_labels is not None:
            namespace["metadata"]["labels"] = namespace_labels
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "namespaceObject": celpy.json_to_cel(namespace),
        }
        variables: dict[Any, Any] = {}
        for name, program in self.variables:
            activation["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(name)] = self._evaluate(program, activation, f"variable {name}")
        activation["variables"] = celtypes.MapType(variables)
        return activation

    @staticmethod
    def _evaluate(program: Any, activation: dict[str, Any], what: str) -> Any:
        result = program.evaluate(activation)
        # An evaluation error is a denial with failurePolicy: Fail; in a test it is a bug in the policy.
        assert not isinstance(result, celpy.CELEvalError), f"{what} failed to evaluate: {result}"
        return result

    def denials(self, obj: dict[str, Any], namespace_labels: dict[str, str] | None = None) -> list[str]:
        activation = self._activation(obj, namespace_labels)
        denied = []
        for expression, message, message_expression in self.validations:
            if self._evaluate(expression, activation, "validation"):
                continue
            text = (
                str(self._evaluate(message_expression, activation, "messageExpression"))
                if message_expression
                else message
            )
            denied.append(text)
        return denied


@pytest.fixture(scope="module")
def policy() -> AdmissionPolicy:
    return AdmissionPolicy(find(render("admission"), "ValidatingAdmissionPolicy", POLICY))


REQUIRED = {REQUIRED_LABEL: "required"}
SCALED = [(name, obj) for name, obj in example_objects() if obj["kind"] in ("ScaledObject", "ScaledJob")]


@pytest.mark.parametrize("labels", [None, {}, REQUIRED], ids=["no-labels", "unlabelled", "connections-required"])
@pytest.mark.parametrize("example", SCALED, ids=[name for name, _ in SCALED])
def test_examples_are_admitted(
    policy: AdmissionPolicy, example: tuple[str, dict[str, Any]], labels: dict[str, str] | None
) -> None:
    name, obj = example
    assert policy.denials(obj, labels) == [], f"{name} would be rejected"
    assert len(policy.variable("ourTriggers", obj, labels)) == len(scaler_triggers(obj))


def _bad(example_adapter: str = "rabbitmq", /, **metadata: str | None) -> dict[str, Any]:
    """A copy of the first example for `example_adapter`, its trigger's metadata changed (None removes a key)."""
    obj = copy.deepcopy(
        next(o for _, o in SCALED if scaler_triggers(o)[0]["metadata"].get("adapter") == example_adapter)
    )
    trigger = scaler_triggers(obj)[0]
    for key, value in metadata.items():
        if value is None:
            trigger["metadata"].pop(key, None)
        else:
            trigger["metadata"][key] = value
    return obj


def test_trigger_without_adapter_is_denied(policy: AdmissionPolicy) -> None:
    assert policy.denials(_bad(adapter=None)) == [
        "spec.triggers: a trigger for keda-queue-scaler has no metadata.adapter; set adapter to one of "
        "gcp-pubsub, prometheus, rabbitmq"
    ]


def test_trigger_with_empty_adapter_is_denied(policy: AdmissionPolicy) -> None:
    (denial,) = policy.denials(_bad(adapter=""))
    assert "has no metadata.adapter" in denial


def test_unknown_adapter_is_denied_by_name(policy: AdmissionPolicy) -> None:
    assert policy.denials(_bad(adapter="kafka")) == [
        "spec.triggers: unknown adapter 'kafka'; built-in adapters are gcp-pubsub, prometheus, rabbitmq"
    ]


@pytest.mark.parametrize(
    "address",
    [
        "keda-queue-scaler.keda-scalers.svc:9090",
        "keda-queue-scaler.keda-scalers.svc.cluster.local:9090",
        "keda-queue-scaler.keda-scalers:9090",
        "dns:///keda-queue-scaler.keda-scalers.svc:9090",
        "keda-queue-scaler-metrics.keda-scalers.svc:9090",
    ],
)
def test_every_way_of_naming_the_scaler_is_checked(policy: AdmissionPolicy, address: str) -> None:
    (denial,) = policy.denials(_bad(adapter=None, scalerAddress=address))
    assert "has no metadata.adapter" in denial


@pytest.mark.parametrize(
    "address", ["other-scaler.keda-scalers.svc:9090", "keda-queue-scaler.elsewhere.svc:9090", "keda-queue-scaler:9090x"]
)
def test_triggers_for_other_scalers_are_left_alone(policy: AdmissionPolicy, address: str) -> None:
    assert policy.denials(_bad(adapter=None, scalerAddress=address, password="x"), REQUIRED) == []


def test_kedas_own_scalers_are_left_alone(policy: AdmissionPolicy) -> None:
    obj = _bad()
    obj["spec"]["triggers"].append(
        {"type": "rabbitmq", "metadata": {"host": "amqp://user:secret@rabbit:5672/", "queueName": "q", "value": "5"}}
    )
    assert policy.denials(obj, REQUIRED) == []


@pytest.mark.parametrize("key", ["password", "bearerToken", "customAuthValue"])
def test_inline_secret_is_denied_when_named_connections_are_required(policy: AdmissionPolicy, key: str) -> None:
    obj = _bad("prometheus", **{key: "s3cret"})
    assert policy.denials(obj, REQUIRED) == [
        f"spec.triggers: metadata.{key} is an inline secret; this namespace requires named connections "
        "(metadata.connection)"
    ]
    assert all("s3cret" not in d for d in policy.denials(obj, REQUIRED)), "the message must not echo the secret"


def test_inline_secret_is_allowed_where_named_connections_are_not_required(policy: AdmissionPolicy) -> None:
    obj = _bad("prometheus", password="s3cret")
    assert policy.denials(obj, {}) == []
    assert policy.denials(obj, {REQUIRED_LABEL: "optional"}) == []


def test_url_userinfo_is_denied_when_named_connections_are_required(policy: AdmissionPolicy) -> None:
    obj = _bad(connection=None, host="amqp://keda:s3cret@rabbitmq.messaging.svc:5672/orders")
    denials = policy.denials(obj, REQUIRED)
    assert denials == [
        "spec.triggers: metadata.host is a URL with user info (user:password@); this namespace requires "
        "named connections (metadata.connection)"
    ]
    assert policy.denials(obj, {}) == []


def test_url_without_userinfo_is_allowed(policy: AdmissionPolicy) -> None:
    obj = _bad("prometheus", serverAddress="https://prometheus.monitoring.svc:9090/api?x=a@b")
    assert policy.denials(obj, REQUIRED) == []


def test_several_problems_are_all_reported(policy: AdmissionPolicy) -> None:
    obj = _bad(adapter="kafka", password="x", connection=None, host="amqp://u:p@h/")
    assert len(policy.denials(obj, REQUIRED)) == 3


def test_scaled_jobs_are_checked_too(policy: AdmissionPolicy) -> None:
    obj = copy.deepcopy(next(o for _, o in SCALED if o["kind"] == "ScaledJob"))
    scaler_triggers(obj)[0]["metadata"]["adapter"] = "kafka"
    assert "unknown adapter 'kafka'" in policy.denials(obj)[0]
    rules = find(render("admission"), "ValidatingAdmissionPolicy", POLICY)["spec"]["matchConstraints"]["resourceRules"]
    assert {"scaledobjects", "scaledjobs"} <= {r for rule in rules for r in rule["resources"]}


def test_known_adapters_are_the_built_in_adapters(policy: AdmissionPolicy) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    built_in = set(pyproject["project"]["entry-points"]["scaler.adapters"])
    listed = {str(a) for a in policy.variable("knownAdapters", _bad())}
    assert listed == built_in, (
        f"the policy lists {sorted(listed)}, pyproject.toml registers {sorted(built_in)}; "
        "update knownAdapters (and the messages) in deploy/admission/validating-admission-policy.yaml"
    )


def test_secret_keys_cover_every_secret_of_every_installed_adapter(policy: AdmissionPolicy) -> None:
    listed = {str(k) for k in policy.variable("secretKeys", _bad())}
    for name, cls in discover_adapter_classes().items():
        # A row's key lists its aliases too ("bearerToken / token"): each of them is a way to send the secret.
        secrets = {
            key.strip() for row in describe_fields(cls.metadata_model) if row["secret"] for key in row["key"].split("/")
        }
        assert secrets <= listed, f"adapter {name}: secret keys {sorted(secrets - listed)} missing from secretKeys"


def test_binding_enforces_the_policy() -> None:
    objects = render("admission")
    policy = find(objects, "ValidatingAdmissionPolicy", POLICY)
    binding = find(objects, "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert "Deny" in binding["spec"]["validationActions"]
    assert policy["spec"]["failurePolicy"] == "Fail"


@pytest.fixture(scope="module")
def warnings_policy() -> AdmissionPolicy:
    return AdmissionPolicy(find(render("admission"), "ValidatingAdmissionPolicy", WARNINGS))


@pytest.mark.parametrize("value", ["true", "1", "T", "True"])
def test_unsafe_ssl_is_warned_about_not_denied(warnings_policy: AdmissionPolicy, value: str) -> None:
    (warning,) = warnings_policy.denials(_bad("prometheus", unsafeSsl=value))
    assert "unsafeSsl" in warning and "KEDA itself" in warning
    binding = find(render("admission"), "ValidatingAdmissionPolicyBinding", WARNINGS)
    assert binding["spec"]["policyName"] == WARNINGS
    assert "Warn" in binding["spec"]["validationActions"] and "Deny" not in binding["spec"]["validationActions"]


@pytest.mark.parametrize("value", ["false", "0", "", "yes"])
def test_unsafe_ssl_false_or_unparsable_is_not_warned_about(warnings_policy: AdmissionPolicy, value: str) -> None:
    assert warnings_policy.denials(_bad("prometheus", unsafeSsl=value)) == []


@pytest.mark.parametrize("example", SCALED, ids=[name for name, _ in SCALED])
def test_examples_get_no_warning(warnings_policy: AdmissionPolicy, example: tuple[str, dict[str, Any]]) -> None:
    assert warnings_policy.denials(example[1]) == []
