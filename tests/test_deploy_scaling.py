"""The production overlay scales the scaler itself: an HPA on CPU, spread over nodes and zones, a disruption
budget that leaves a pod serving at the HPA's minimum, and requests the HPA's CPU target can work from."""

from __future__ import annotations

from typing import Any

from scaler.settings import Settings

from .fixtures._manifests import config_map_data, find, render, scaler_container

PRODUCTION = "overlays/production"


def _millicores(value: str) -> float:
    return float(value[:-1]) if value.endswith("m") else float(value) * 1000


def _hpa() -> dict[str, Any]:
    return find(render(PRODUCTION), "HorizontalPodAutoscaler", "keda-queue-scaler")


def test_the_hpa_scales_the_scalers_deployment_on_cpu() -> None:
    hpa = _hpa()
    deployment = find(render(PRODUCTION), "Deployment", "keda-queue-scaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # The HPA owns the count: a replicas field would reset it on every `kubectl apply`.
    assert "replicas" not in deployment["spec"]


def test_new_pods_get_calls_by_connection_age_which_the_hpa_waits_for() -> None:
    # Safe to add pods only if KEDA reaches them: the server's default max connection age makes KEDA
    # re-resolve; the HPA must not judge (and remove) a pod before it had one age to take its share.
    config = config_map_data(render(PRODUCTION))
    age = config.get("max_connection_age", Settings.model_fields["max_connection_age"].default)
    assert 0 < age <= 120
    assert _hpa()["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 2 * age


def test_disruption_budget_leaves_a_pod_serving_at_the_hpas_minimum() -> None:
    budget = find(render(PRODUCTION), "PodDisruptionBudget", "keda-queue-scaler")["spec"]
    minimum = _hpa()["spec"]["minReplicas"]
    if "maxUnavailable" in budget:
        assert minimum - int(budget["maxUnavailable"]) >= 1
    else:
        assert 1 <= int(budget["minAvailable"]) < minimum  # else no node could ever be drained


def test_pods_spread_over_nodes_and_zones() -> None:
    deployment = find(render(PRODUCTION), "Deployment", "keda-queue-scaler")
    spec = deployment["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_cpu_request_is_what_the_hpa_target_is_a_fraction_of() -> None:
    resources = scaler_container(render(PRODUCTION))["resources"]
    request = _millicores(resources["requests"]["cpu"])
    limit = _millicores(resources["limits"]["cpu"])
    # Utilization is judged against the request; a limit at the target would throttle before scaling.
    target = _hpa()["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert request >= 250 and limit > request * target / 100 * 2
