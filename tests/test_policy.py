from __future__ import annotations

from pathlib import Path

import pytest

from auditor.model import Severity
from auditor.policy import Policy, PolicyError, load_policy


def test_default_policy_loads_with_documented_defaults() -> None:
    policy = load_policy()
    assert policy.home_jurisdiction == "US"
    assert policy.min_tls_version == 0x0303
    assert policy.min_rsa_bits == 2048
    assert policy.reveal_evidence is False


def test_policy_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "home_jurisdiction: EU\nallowed_countries: [CH]\nmin_tls_version: tls1.3\n"
        "severity_overrides: {weak-tls.no-sni: info}\nignore_hosts: [.corp.example]\n"
    )
    policy = load_policy(path)
    assert policy.min_tls_version == 0x0304
    assert policy.severity_for("weak-tls.no-sni", Severity.LOW) is Severity.INFO
    assert policy.country_allowed("DE")  # EEA member under an EU home jurisdiction
    assert policy.country_allowed("CH")
    assert not policy.country_allowed("CN")
    assert policy.is_ignored("llm.corp.example") and policy.is_ignored("corp.example")
    assert not policy.is_ignored("corp.example.com")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allowed_countrys: [DE]\n", "unknown policy keys: allowed_countrys"),
        ("severity_overrides: {x: urgent}\n", "unknown severity 'urgent'"),
        ("min_tls_version: tls9\n", "min_tls_version 'tls9'"),
        ("- a\n- b\n", "a policy is a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_policy_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_policy_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read policy"):
        load_policy(tmp_path / "nope.yaml")


def test_unknown_jurisdiction_is_not_cross_border() -> None:
    assert Policy().jurisdiction_allowed("unknown")
    assert not Policy().jurisdiction_allowed("CN")


def test_allowed_places_are_read_case_insensitively_from_the_current_fields() -> None:
    policy = Policy(home_jurisdiction="eu", allowed_countries={"ch"})
    assert policy.country_allowed("FR") and policy.country_allowed("Ch")
    assert not policy.country_allowed("US")
    policy.allowed_countries.add("us")
    assert policy.country_allowed("US")
    assert policy.jurisdiction_allowed("de") and not policy.jurisdiction_allowed("CN")
    policy.home_jurisdiction = "CN"
    assert policy.jurisdiction_allowed("cn") and not policy.jurisdiction_allowed("DE")
