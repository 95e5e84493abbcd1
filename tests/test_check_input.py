"""Bad manifests: `scaler check` names the file, document and field, exits 2, never prints a traceback.

No scaler is contacted: validation happens before any call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaler.inspect.crd import BUILT_IN, load_schemas, schema_errors
from scaler.inspect.manifests import ManifestError, read_manifests
from tests.fixtures.scaler import ROOT
from tests.test_check import KEDA_CRDS, run_cli

TRIGGER = {
    "type": "external",
    "metadata": {"scalerAddress": "scaler.keda:9090", "adapter": "prometheus", "query": "up", "threshold": "5"},
}
GOOD = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "orders"},
    "spec": {"scaleTargetRef": {"name": "orders"}, "triggers": [TRIGGER]},
}


def with_spec(**changes: Any) -> str:
    return json.dumps({**GOOD, "spec": {**GOOD["spec"], **changes}})


DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders}\n"

CASES = [
    # (case, file content, expected fragments of the message)
    (
        "malformed YAML",
        "apiVersion: keda.sh/v1alpha1\nkind: [ScaledObject\n",
        ["document 1", "not valid YAML", "line 3"],
    ),
    (
        "malformed YAML in a later document",
        f"{json.dumps(GOOD)}\n---\nspec:\n  triggers: - a\n",
        ["document 2", "not valid YAML (line 4, column 13)"],
    ),
    (
        "a document that is not a ScaledObject",
        f"{json.dumps(GOOD)}\n---\n{DEPLOYMENT}",
        ["document 2", "kind: Deployment", "apiVersion: apps/v1", "not a ScaledObject or ScaledJob"],
    ),
    ("a list instead of an object", "- 1\n- 2\n", ["document 1", "expected a Kubernetes object"]),
    (
        "a trigger without metadata",
        with_spec(triggers=[TRIGGER, {"type": "external"}]),
        ["document 1", "spec.triggers[1].metadata: is required"],
    ),
    (
        "a number where KEDA wants a string",
        with_spec(triggers=[{**TRIGGER, "metadata": {**TRIGGER["metadata"], "threshold": 5}}]),
        ["spec.triggers[0].metadata.threshold: must be a string, got the number 5"],
    ),
    ("a misspelt field", with_spec(minReplicas=1), ["spec.minReplicas: is not a field of spec", "minReplicaCount"]),
    ("a negative count", with_spec(minReplicaCount=-1), ["spec.minReplicaCount: must be at least 0, got -1"]),
    ("min above max", with_spec(minReplicaCount=5, maxReplicaCount=2), ["spec.minReplicaCount: 5 is greater"]),
    (
        "idle not below min",
        with_spec(minReplicaCount=1, idleReplicaCount=1),
        ["spec.idleReplicaCount: must be less than minReplicaCount (1)"],
    ),
    ("no scale target", json.dumps({**GOOD, "spec": {"triggers": [TRIGGER]}}), ["spec.scaleTargetRef: is required"]),
    ("no triggers", with_spec(triggers=[]), ["spec.triggers: must have at least 1 item"]),
    ("an empty trigger type", with_spec(triggers=[{**TRIGGER, "type": ""}]), ["spec.triggers[0].type: must not be"]),
    (
        "Utilization on an external trigger",
        with_spec(triggers=[{**TRIGGER, "metricType": "Utilization"}]),
        ["spec.triggers[0].metricType: must be AverageValue or Value"],
    ),
    (
        "an external trigger without scalerAddress",
        with_spec(triggers=[{"type": "external", "metadata": {"adapter": "prometheus"}}]),
        ["spec.triggers[0].metadata.scalerAddress: is required (or give --address / --local)"],
    ),
    ("no name", json.dumps({**GOOD, "metadata": {}}), ["metadata.name: is required"]),
    ("nothing at all", "", ["no ScaledObject or ScaledJob found"]),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest_is_named_and_exits_2(tmp_path: Path, content: str, expected: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_cli("check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"scaler: {path}") or "no ScaledObject" in result.stderr
    for fragment in expected:
        assert fragment in result.stderr


def test_stdin_errors_name_stdin() -> None:
    result = run_cli("check", "-", stdin=DEPLOYMENT)
    assert result.returncode == 2
    assert result.stderr.startswith("scaler: <stdin>, document 1: kind: Deployment")


def test_missing_file_exits_2() -> None:
    result = run_cli("check", "/nonexistent/so.yaml")
    assert (result.returncode, result.stderr) == (
        2,
        "scaler: /nonexistent/so.yaml: cannot read: No such file or directory\n",
    )


def test_schema_comes_from_kedas_crds_given() -> None:
    schemas = load_schemas(str(ROOT / KEDA_CRDS), environ={})
    assert schemas.origin == f"KEDA's CRDs from {ROOT / KEDA_CRDS}"
    assert set(schemas.by_kind) == {"ScaledObject", "ScaledJob"}
    assert schemas.by_kind["ScaledObject"] is not BUILT_IN["ScaledObject"]


@pytest.mark.parametrize("kind", ["ScaledObject", "ScaledJob"])
def test_built_in_schema_catches_what_check_reads_without_the_crd_files(kind: str) -> None:
    target = "scaleTargetRef" if kind == "ScaledObject" else "jobTargetRef"
    document: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {target: {"name": "x"}, "triggers": [{"type": "external"}], "maxReplicaCount": 0, "extra": 1},
    }
    problems = list(schema_errors(document, BUILT_IN[kind]))
    # `extra` passes: the built-in schema only knows the fields `scaler check` reads.
    assert sorted(problems) == [
        ("spec.maxReplicaCount", "must be at least 1, got 0"),
        ("spec.triggers[0].metadata", "is required"),
    ]


def test_without_the_crd_files_the_built_in_schema_is_used(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(json.dumps(GOOD))
    bad.write_text(with_spec(triggers=[{"type": "external"}]))
    schemas = load_schemas(None, environ={"PATH": str(tmp_path)})  # no --crds, no env var, no kubectl
    [resource] = read_manifests([str(good)], need_address=True, schemas=schemas)
    assert (resource.name, resource.triggers[0].metadata["adapter"]) == ("orders", "prometheus")
    with pytest.raises(ManifestError) as err:
        read_manifests([str(bad)], need_address=True, schemas=schemas)
    assert str(err.value) == (
        f"{bad}, document 1: spec.triggers[0].metadata: is required "
        "[checked against the built-in subset (no --crds, no kubectl)]"
    )
