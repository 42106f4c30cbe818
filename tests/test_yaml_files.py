"""load_yaml: the parsed document, from the cache only while the file is unchanged and the
cache is the user's own; a broken or unusable cache is the same as none."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

import pytest
import yaml

from auditor import yaml_files
from auditor.signatures import SIGNATURE_FILES, default_signatures_dir
from auditor.yaml_files import YAMLSyntaxError, cache_directory, load_yaml


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cache_directory()


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


def _without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(text: str) -> None:
        raise AssertionError("parsed although the cache holds the document")

    monkeypatch.setattr(yaml_files, "_parse", fail)


@pytest.mark.parametrize("name", SIGNATURE_FILES)
def test_signature_files_read_as_pyyaml_reads_them_parsed_and_cached(
    name: str, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / name
    path.write_bytes((default_signatures_dir() / name).read_bytes())
    expected = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert load_yaml(path) == expected  # parsed
    assert len(_entries(cache)) == 1
    _without_parsing(monkeypatch)
    assert load_yaml(path) == expected  # from the cache


def test_a_changed_file_is_parsed_again(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("min_rsa_bits: 2048\n", encoding="utf-8")
    assert load_yaml(path) == {"min_rsa_bits": 2048}
    path.write_text("min_rsa_bits: 3072\n", encoding="utf-8")
    assert load_yaml(path) == {"min_rsa_bits": 3072}
    assert len(_entries(cache)) == 1  # one entry per file, rewritten


@pytest.mark.parametrize(
    "entry",
    [
        "",
        '{"format": 1, "sha256": "',  # half written
        "[1, 2]",
        '{"format": 1, "sha256": "0000", "document": {"planted": true}}',  # other text
        '{"format": 0, "sha256": "%s", "document": {"planted": true}}',  # older layout
    ],
)
def test_a_corrupt_or_stale_entry_is_a_miss_and_is_replaced(
    entry: str, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("a: [1, 2]\n", encoding="utf-8")
    load_yaml(path)
    (entry_path,) = _entries(cache)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry_path.write_text(entry.replace("%s", digest), encoding="utf-8")
    assert load_yaml(path) == {"a": [1, 2]}
    _without_parsing(monkeypatch)
    assert load_yaml(path) == {"a": [1, 2]}  # the entry was written again


def test_a_cache_directory_others_can_write_to_is_not_used(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("relays: [a.example]\n", encoding="utf-8")
    load_yaml(path)
    (entry_path,) = _entries(cache)
    planted = entry_path.read_text(encoding="utf-8").replace("a.example", "b.example")
    entry_path.write_text(planted, encoding="utf-8")
    os.chmod(cache, 0o777)
    assert load_yaml(path) == {"relays": ["a.example"]}
    assert entry_path.read_text(encoding="utf-8") == planted  # neither read nor written


def test_an_unusable_cache_directory_only_means_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_directory))
    path = tmp_path / "doc.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    assert load_yaml(path) == {"a": 1}
    assert load_yaml(path) == {"a": 1}


def test_no_home_directory_only_means_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    path = tmp_path / "doc.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    assert load_yaml(path) == {"a": 1}


def test_a_lone_surrogate_is_cached(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("a: x\n", encoding="utf-8")
    yaml_files._write_entry(yaml_files._entry_path(path), "digest", {"a": "\ud800"})
    assert yaml_files._read_entry(yaml_files._entry_path(path), "digest") == {"a": "\ud800"}


@pytest.mark.parametrize(
    ("text", "document"),
    [
        ("day: 2024-05-01\n", {"day": datetime.date(2024, 5, 1)}),  # not JSON
        ("1: one\n", {1: "one"}),  # JSON would make the key a string
        ("", None),
    ],
)
def test_documents_json_cannot_give_back_are_not_cached(
    text: str, document: object, tmp_path: Path, cache: Path
) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_yaml(path) == document
    assert load_yaml(path) == document
    assert len(_entries(cache)) == (1 if document is None else 0)


def test_invalid_yaml_raises_pyyamls_message_and_is_not_cached(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("a: [\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError) as expected:
        yaml.load(
            path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    with pytest.raises(YAMLSyntaxError) as raised:
        load_yaml(path)
    assert str(raised.value) == str(expected.value)
    assert _entries(cache) == []
