"""Every example trigger is accepted by the scaler itself, so the examples cannot rot.

A real server is started with the production overlay's config (its named connections, with the values of
deploy/examples/connection-secret.yaml as the secret files), and each example trigger is sent to it over
gRPC exactly as KEDA sends it: GetMetricSpec needs no source, so no broker has to run. Keys the adapter
does not declare only earn a warning from the server, so they are checked here against the adapter's
metadata model as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
import yaml

from adapters.api import discover_adapter_classes
from scaler.triggers import ENGINE_KEYS

from .fixtures._manifests import EXAMPLES, config_map_data, example_objects, find, load_yaml_documents, render
from .fixtures.scaler import ScalerProcess

FROM_ENV = "FromEnv"


def _example_triggers() -> list[tuple[str, dict[str, Any], int, dict[str, Any]]]:
    found = []
    for name, obj in example_objects():
        for index, trigger in enumerate(obj.get("spec", {}).get("triggers", [])):
            if trigger["type"] in ("external", "external-push"):
                found.append((name, obj, index, trigger))
    return found


TRIGGERS = _example_triggers()


def _id(case: tuple[str, dict[str, Any], int, dict[str, Any]]) -> str:
    return f"{case[0]}#{case[2]}"


@pytest.fixture(scope="module")
def production_scaler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScalerProcess]:
    """The scaler with the production overlay's settings, secrets from the example Secret, no TLS."""
    workdir: Path = tmp_path_factory.mktemp("production-config")
    config = config_map_data(render("overlays/production"))
    secret = find(load_yaml_documents(EXAMPLES / "connection-secret.yaml"), "Secret")
    # TLS is the transport, not the metadata under test; the test's channel is plaintext.
    config = {k: v for k, v in config.items() if not k.startswith("tls_")}
    for connection in config.get("connections", {}).values():
        for key, path in connection.get("fromFile", {}).items():
            local = workdir / PurePosixPath(path).name
            local.write_text(secret["stringData"][PurePosixPath(path).name])
            connection["fromFile"][key] = str(local)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = ScalerProcess(["--config", str(path), "--log-format", "text"])
    yield process
    process.stop()


def test_examples_have_triggers_for_every_built_in_adapter() -> None:
    adapters = {t["metadata"].get("adapter") for _, _, _, t in TRIGGERS}
    assert {"rabbitmq", "gcp-pubsub", "prometheus"} <= adapters
    assert {t["type"] for _, _, _, t in TRIGGERS} == {"external", "external-push"}


def _adapter_class(name: str, metadata: dict[str, str]) -> Any:
    installed = discover_adapter_classes()
    adapter = metadata.get("adapter", "")
    assert adapter in installed, (
        f"{name}: adapter {adapter!r} is not installed in this environment (installed: "
        f"{', '.join(sorted(installed))}); the example cannot be checked until that adapter is merged"
    )
    return installed[adapter]


@pytest.mark.parametrize("case", TRIGGERS, ids=[_id(c) for c in TRIGGERS])
def test_example_trigger_keys_are_declared_by_its_adapter(
    case: tuple[str, dict[str, Any], int, dict[str, Any]],
) -> None:
    name, _, _, trigger = case
    metadata = trigger["metadata"]
    model = _adapter_class(name, metadata).metadata_model
    declared = set(model.keys()) | ENGINE_KEYS
    for key in metadata:
        plain = key.removesuffix(FROM_ENV) if key.endswith(FROM_ENV) else key
        assert plain in declared, f"{name}: metadata key {key!r} is not a key of adapter {metadata['adapter']!r}"


@pytest.mark.parametrize("case", TRIGGERS, ids=[_id(c) for c in TRIGGERS])
def test_example_trigger_is_accepted_by_the_scaler(
    case: tuple[str, dict[str, Any], int, dict[str, Any]], production_scaler: ScalerProcess
) -> None:
    name, obj, _, trigger = case
    metadata = {k: str(v) for k, v in trigger["metadata"].items()}
    model = _adapter_class(name, metadata).metadata_model
    try:
        spec = production_scaler.spec(metadata, name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])
    except grpc.RpcError as exc:
        raise AssertionError(f"{name}: the scaler rejected the trigger: {exc.code().name}: {exc.details()}") from None
    assert len(spec.metricSpecs) == 1
    # The target is the example's own number, read through the adapter's model (value / threshold / ...).
    assert spec.metricSpecs[0].targetSizeFloat == float(metadata[model.target_key])


def test_a_broken_example_would_be_caught(production_scaler: ScalerProcess) -> None:
    # The check above can fail: a trigger with a typo in its target is refused by the same server.
    _, obj, _, trigger = next(c for c in TRIGGERS if c[3]["metadata"]["adapter"] == "prometheus")
    metadata = {**trigger["metadata"], "threshold": "fifty"}
    with pytest.raises(grpc.RpcError) as caught:
        production_scaler.spec(metadata, name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "threshold" in (caught.value.details() or "")
