"""``load_context``: the one loader of signatures, policy and GeoIP, and its errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditor.context import ContextError, load_context
from auditor.enrich.geo import PackagedGeoLookup
from auditor.policy import load_policy
from auditor.signatures import default_signatures_dir

ROOT = Path(__file__).resolve().parent.parent


def context_error(**paths: str) -> ContextError:
    with pytest.raises(ContextError) as caught:
        load_context(**paths)
    return caught.value


def test_no_paths_mean_the_shipped_inputs() -> None:
    for nothing in (None, ""):  # the proxy's options say "" for "not set"
        context = load_context(nothing, nothing, nothing)
        assert context.signatures.directory == default_signatures_dir()
        assert context.policy == load_policy()
        assert isinstance(context.geo, PackagedGeoLookup)


def test_reveal_evidence_switches_the_policy_on(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("reveal_evidence: false\n")
    assert load_context(policy_path=str(policy)).policy.reveal_evidence is False
    assert load_context(policy_path=str(policy), reveal_evidence=True).policy.reveal_evidence
    # The switch off leaves a policy that reveals as it is.
    policy.write_text("reveal_evidence: true\n")
    assert load_context(policy_path=str(policy)).policy.reveal_evidence is True
    # Each context reads its own policy: the switch does not stay on for the next one.
    assert load_context(reveal_evidence=True).policy.reveal_evidence is True
    assert load_context().policy.reveal_evidence is False


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_signatures_that_are_not_a_directory(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "signatures"
    if kind == "a file":
        path.write_text("")
    error = context_error(signatures_dir=str(path))
    assert (error.which, error.path) == ("signatures", str(path))
    assert str(error) == f"signatures: {path}: no such directory"


def test_a_broken_signature_file_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "signatures"
    shutil.copytree(ROOT / "signatures", copy)
    (copy / "relays.yaml").write_text("entries: [unclosed\n")
    error = context_error(signatures_dir=str(copy))
    assert (error.which, error.path) == ("signatures", str(copy))
    assert error.detail.startswith(f"{copy / 'relays.yaml'}: not valid YAML")


def test_a_missing_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    error = context_error(policy_path=str(path))
    assert (error.which, error.path) == ("policy", str(path))
    assert str(error) == f"policy: {path}: cannot read policy: No such file or directory"


def test_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("home_jurisdictoin: DE\n")
    error = context_error(policy_path=str(path))
    assert (error.which, error.path) == ("policy", str(path))
    assert str(error) == f"policy: {path}: unknown policy keys: home_jurisdictoin"


def test_a_missing_geoip_database(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    error = context_error(geoip_db=str(path))
    assert (error.which, error.path) == ("GeoIP database", str(path))
    assert str(error) == f"GeoIP database: {path}: GeoIP database not found"


def test_a_file_that_is_not_a_geoip_database(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    path.write_bytes(b"not a MaxMind database")
    error = context_error(geoip_db=str(path))
    assert (error.which, error.path) == ("GeoIP database", str(path))
    assert error.detail.startswith(f"{path}: not a MaxMind DB file")


def test_the_first_input_that_fails_is_reported(tmp_path: Path) -> None:
    error = context_error(
        signatures_dir=str(tmp_path / "none"),
        policy_path=str(tmp_path / "none.yaml"),
        geoip_db=str(tmp_path / "none.mmdb"),
    )
    assert error.which == "signatures"
    error = context_error(policy_path=str(tmp_path / "none.yaml"), geoip_db=str(tmp_path / "x"))
    assert error.which == "policy"
