"""The study protocol: schema, defaults, errors naming field/value/rule, and the protocol id."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from protocols import ProtocolError, canonical_json, load_protocol, parse_protocol, protocol_id
from protocols.schema import Protocol

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "protocols" / "examples").glob("*.yaml"))
MINIMAL = {"study": {"name": "s"}, "label": {"column": "y", "positive": "1", "negative": "0"}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_protocol_loads(path: Path) -> None:
    protocol = load_protocol(path)
    assert isinstance(protocol, Protocol)
    assert len(protocol_id(protocol)) == 64


def test_examples_exist() -> None:
    assert EXAMPLES, "protocols/examples/ must hold example protocols"


def test_protocol_id_is_sha256_of_canonical_json() -> None:
    protocol = parse_protocol(MINIMAL)
    text = canonical_json(protocol)
    # Independent recomputation from the documented recipe: sorted keys, compact separators, UTF-8.
    expected = hashlib.sha256(
        json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert protocol_id(protocol) == expected


def test_explicit_defaults_share_the_id_and_any_change_alters_it() -> None:
    implicit = parse_protocol(MINIMAL)
    explicit = parse_protocol({**MINIMAL, "model": {"type": "logistic", "seed": 42}})
    assert protocol_id(implicit) == protocol_id(explicit)
    changed = parse_protocol({**MINIMAL, "model": {"seed": 43}})
    assert protocol_id(changed) != protocol_id(implicit)


def test_key_order_in_yaml_does_not_change_the_id(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(MINIMAL, sort_keys=True))
    b.write_text(yaml.safe_dump(dict(reversed(list(MINIMAL.items()))), sort_keys=False))
    assert protocol_id(load_protocol(a)) == protocol_id(load_protocol(b))


@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"model": {"type": "random_forest"}}, "model.type", "'random_forest'"),
        ({"model": {"aggregation": "fedprox"}}, "model", "fedprox needs proximal_mu > 0"),
        ({"validation": {"conformal_alpha": 1.5}}, "validation.conformal_alpha", "1.5"),
        ({"extraction": {"texture_aggregation": ["4D"]}}, "extraction.texture_aggregation", "allowed: 3D_avg"),
        ({"extraction": {"families": ["glcm", "wavelets"]}}, "extraction.families", "'wavelets'"),
        ({"extraction": {"discretisation": {"method": "quantiles"}}}, "extraction.discretisation.method", "fixed_bin_width"),
        ({"extraction": {"resampling": {"spacing": [1, 1]}}}, "extraction.resampling.spacing", "three positive numbers"),
        ({"extraction": {"resegmentation": {"range": [400, -1000]}}}, "extraction.resegmentation.range", "below upper"),
        ({"batch": {"by": "column"}}, "batch", "batch.column is required"),
        ({"covariates": {"continuous": [{"name": "age", "min": 90, "max": 18}]}}, "covariates.continuous[0]", "below max"),
        ({"covariates": {"categorical": [{"name": "sex", "levels": ["F"]}]}}, "covariates.categorical[0].levels", "at least 2"),
        ({"covariates": {"categorical": [{"name": "y", "levels": ["a", "b"]}]}}, "(top level)", "must not be a covariate"),
        ({"harmonisation": {"eb": "sometimes"}}, "harmonisation.eb", "'sometimes'"),
        ({"privacy": {"min_cell_count": 0}}, "privacy.min_cell_count", "greater than or equal to 1"),
        ({"modle": {"type": "mlp"}}, "modle", "unknown field"),
    ],
)
def test_invalid_field_is_named_with_value_and_rule(patch: dict, field: str, fragment: str) -> None:
    data = copy.deepcopy(MINIMAL)
    for section, value in patch.items():
        data[section] = {**data.get(section, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(data, "p.yaml")
    message = str(caught.value)
    assert "p.yaml" in message
    assert field in message, message
    assert fragment in message, message


def test_missing_required_section_is_reported() -> None:
    with pytest.raises(ProtocolError, match=r"label: required field is missing"):
        parse_protocol({"study": {"name": "s"}})


def test_label_classes_must_differ() -> None:
    with pytest.raises(ProtocolError, match="positive and negative classes must differ"):
        parse_protocol({**MINIMAL, "label": {"column": "y", "positive": "1", "negative": "1"}})


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("study: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(broken)
    with pytest.raises(ProtocolError, match="cannot read the file"):
        load_protocol(tmp_path / "absent.yaml")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_invalid_protocol_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "model": {"type": "knn"}}))
    result = _run("coordinator", "validate", str(bad))
    assert result.returncode == 2, result.stderr
    assert "model.type" in result.stderr and "'knn'" in result.stderr and "logistic" in result.stderr


def test_protocol_command_prints_the_id(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    result = _run("site_client", "protocol", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == protocol_id(parse_protocol(MINIMAL))
