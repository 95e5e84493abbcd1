"""The wire contract: KEDA's package, service, RPCs, messages and field numbers; stubs are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scaler._generated import externalscaler_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent

# From ../shared/KEDA-PROTOCOL.md (KEDA's pkg/scalers/externalscaler/externalscaler.proto).
KEDA_MESSAGES = {
    "ScaledObjectRef": {"name": 1, "namespace": 2, "scalerMetadata": 3},
    "IsActiveResponse": {"result": 1},
    "GetMetricSpecResponse": {"metricSpecs": 1},
    "MetricSpec": {"metricName": 1, "targetSize": 2, "targetSizeFloat": 3},
    "GetMetricsRequest": {"scaledObjectRef": 1, "metricName": 2},
    "GetMetricsResponse": {"metricValues": 1},
    "MetricValue": {"metricName": 1, "metricValue": 2, "metricValueFloat": 3},
}
KEDA_RPCS = {
    "IsActive": ("ScaledObjectRef", "IsActiveResponse", False),
    "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse", True),
    "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", False),
    "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse", False),
    "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", True),
}


def test_package_and_service_names_match_keda() -> None:
    assert pb.DESCRIPTOR.package == "externalscaler"
    assert pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name == "externalscaler.ExternalScaler"


def test_rpcs_match_keda() -> None:
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    found = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert found == KEDA_RPCS


def test_message_fields_and_numbers_match_keda() -> None:
    found = {
        name: {f.name: f.number for f in pb.DESCRIPTOR.message_types_by_name[name].fields} for name in KEDA_MESSAGES
    }
    assert found == KEDA_MESSAGES
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(KEDA_MESSAGES)
    ref = pb.DESCRIPTOR.message_types_by_name["ScaledObjectRef"].fields_by_name["scalerMetadata"]
    assert ref.message_type.GetOptions().map_entry


def test_committed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "scaler" / "_generated"
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    for name in names:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"scaler/_generated/{name} is stale: run `make proto` and commit the result"
        )
