"""Tests of the shipped signature data (signatures/*.yaml), its schemas and the loader."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import secrets
import shutil
import string
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from auditor.signatures import (
    SIGNATURE_FILES,
    DomainRule,
    SignatureError,
    Signatures,
    default_signatures_dir,
    load_signatures,
    validate_signatures,
)

SIGNATURES_DIR = default_signatures_dir()


@pytest.fixture(scope="module")
def sigs() -> Signatures:
    return load_signatures(SIGNATURES_DIR)


def _entries(name: str) -> list[dict[str, object]]:
    return yaml.safe_load((SIGNATURES_DIR / name).read_text(encoding="utf-8"))["entries"]


def _copy_signatures(tmp_path: Path) -> Path:
    copy = tmp_path / "signatures"
    shutil.copytree(SIGNATURES_DIR, copy, ignore=shutil.ignore_patterns("tools", "__pycache__"))
    return copy


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# -- schema and sources ---------------------------------------------------------------------


def test_every_file_has_a_schema_and_validates() -> None:
    for name in SIGNATURE_FILES:
        assert (SIGNATURES_DIR / "schema" / (Path(name).stem + ".schema.json")).is_file(), name
    assert validate_signatures(SIGNATURES_DIR) == []


@pytest.mark.parametrize("name", SIGNATURE_FILES)
def test_every_entry_has_a_public_source(name: str) -> None:
    entries = _entries(name)
    assert entries, f"{name} has no entries"
    for index, entry in enumerate(entries):
        source = str(entry.get("source") or "").strip()
        assert source, f"{name}: entry {index} has no source"


def test_loader_reads_every_file(sigs: Signatures) -> None:
    assert len(sigs.providers) >= 50
    assert len(sigs.relays) >= 200
    assert {s.family for s in sigs.api_shapes} == {"openai", "anthropic", "gemini", "ollama"}
    assert set(sigs.tls_versions) == {0x0002, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304}
    assert len(sigs.cipher_suites) >= 300
    assert len(sigs.key_formats) >= 30
    assert sigs.anycast_networks
    assert all(isinstance(n.network, ipaddress.IPv4Network | ipaddress.IPv6Network)
               for n in sigs.anycast_networks)


# -- broken copies fail with the file and entry named ----------------------------------------


def test_broken_entry_fails_validation_naming_file_and_entry(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    relays_path = copy / "relays.yaml"
    document = yaml.safe_load(relays_path.read_text(encoding="utf-8"))
    document["entries"][3]["match"] = "fuzzy"
    del document["entries"][5]["source"]
    relays_path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

    problems = validate_signatures(copy)
    assert any(p.startswith("relays.yaml: entries/3/match") for p in problems), problems
    assert any(p.startswith("relays.yaml: entries/5") and "source" in p for p in problems)
    assert all(p.startswith("relays.yaml") for p in problems)


def test_candidate_relay_marked_confirmed_fails_validation(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    relays_path = copy / "relays.yaml"
    document = yaml.safe_load(relays_path.read_text(encoding="utf-8"))
    index = next(i for i, e in enumerate(document["entries"])
                 if e["category"] == "relay_candidate")
    document["entries"][index]["confidence"] = "confirmed"
    relays_path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert any(p.startswith(f"relays.yaml: entries/{index}/confidence")
               for p in validate_signatures(copy))


def test_bad_regex_fails_validation(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    path = copy / "key_formats.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["entries"][0]["regex"] = "sk-(unclosed"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert any(p.startswith("key_formats.yaml: entries/0/regex: bad regex")
               for p in validate_signatures(copy))


def test_unreadable_yaml_is_a_signature_error_naming_the_file(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    (copy / "providers.yaml").write_text("entries: [unclosed\n", encoding="utf-8")
    with pytest.raises(SignatureError, match=r"providers\.yaml: not valid YAML"):
        load_signatures(copy)
    assert any(p.startswith("providers.yaml") for p in validate_signatures(copy))


def test_bad_anycast_network_is_a_signature_error(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    path = copy / "anycast.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["entries"][0]["network"] = "300.1.2.0/24"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(SignatureError, match=r"anycast\.yaml"):
        load_signatures(copy)


def test_directory_without_anycast_file_still_loads(tmp_path: Path) -> None:
    copy = _copy_signatures(tmp_path)
    (copy / "anycast.yaml").unlink()
    loaded = load_signatures(copy)
    assert loaded.anycast_networks == [] and loaded.providers


# -- domain matching ----------------------------------------------------------------------------


def test_suffix_rule_matches_the_domain_and_subdomains_only() -> None:
    rule = DomainRule("relay.tld", "suffix")
    assert rule.matches("relay.tld")
    assert rule.matches("api.x.relay.tld")
    assert rule.matches("API.X.Relay.TLD:443")
    assert rule.matches("api.x.relay.tld.")
    assert not rule.matches("notrelay.tld")
    assert not rule.matches("relay.tld.evil.example")


def test_exact_rule_does_not_match_subdomains() -> None:
    rule = DomainRule("api.relay.tld", "exact")
    assert rule.matches("api.relay.tld")
    assert not rule.matches("x.api.relay.tld")
    assert not rule.matches("relay.tld")


def test_shipped_suffix_relay_matches_deep_subdomains(sigs: Signatures) -> None:
    suffix_relays = [r for r in sigs.relays if r.rule.match == "suffix"]
    assert suffix_relays
    for relay in suffix_relays:
        found = sigs.relay_for_host(f"api.x.{relay.domain}")
        assert found is not None and found.domain.endswith(relay.domain), relay.domain


def test_shipped_exact_entries_do_not_match_subdomains(sigs: Signatures) -> None:
    for entry in [*sigs.relays, *sigs.providers]:
        if entry.rule.match == "exact":
            assert not entry.rule.matches(f"sub.{entry.domain}"), entry.domain


def test_raw_ip_relay_matches_with_port(sigs: Signatures) -> None:
    ip_relays = [r for r in sigs.relays if re.fullmatch(r"[0-9.]+", r.domain)]
    assert ip_relays
    relay = ip_relays[0]
    assert sigs.relay_for_host(f"{relay.domain}:8080") is relay


def test_an_official_host_is_never_a_relay(sigs: Signatures) -> None:
    for provider in sigs.providers:
        if provider.rule.match != "regex":
            assert sigs.relay_for_host(provider.domain) is None, provider.domain
            assert sigs.relay_for_host(f"www.{provider.domain}") is None or (
                provider.rule.match == "exact"
            ), provider.domain
    for relay in sigs.relays:
        assert sigs.provider_for_host(relay.domain) is None, relay.domain


def test_relay_candidates_are_all_suspected(sigs: Signatures) -> None:
    candidates = [r for r in sigs.relays if r.category == "relay_candidate"]
    assert candidates
    assert {r.confidence for r in candidates} == {"suspected"}


def test_official_endpoints(sigs: Signatures) -> None:
    def provider(host: str) -> str | None:
        found = sigs.provider_for_host(host)
        return found.provider if found else None

    assert provider("api.openai.com") == "openai"
    assert provider("api.anthropic.com") == "anthropic"
    assert provider("generativelanguage.googleapis.com") == "google"
    assert provider("myres.openai.azure.com") == "azure-openai"
    assert provider("bedrock-runtime.eu-west-1.amazonaws.com") == "aws-bedrock"
    assert provider("s3.eu-west-1.amazonaws.com") is None
    assert provider("us-central1-aiplatform.googleapis.com") == "google-vertex"
    assert provider("api.deepseek.com") == "deepseek"
    assert provider("chat.deepseek.com") == "deepseek"
    assert provider("open.bigmodel.cn") == "zhipu"
    assert provider("api.mistral.ai") == "mistral"

    deepseek = sigs.provider_for_host("api.deepseek.com")
    assert deepseek is not None and deepseek.jurisdiction == "CN"
    assert set(deepseek.api_shapes) == {"openai", "anthropic"}
    gemini = sigs.provider_for_host("generativelanguage.googleapis.com")
    assert gemini is not None and set(gemini.api_shapes) == {"gemini", "openai"}
    intl = sigs.provider_for_host("dashscope-intl.aliyuncs.com")
    assert intl is not None and intl.jurisdiction == "SG"
    azure = sigs.provider_for_host("myres.openai.azure.com")
    assert azure is not None and azure.region_scoped and azure.jurisdiction == "unknown"
    # the knowledge's own caveat is kept where the jurisdiction is not evidenced
    openai = sigs.provider_for_host("api.openai.com")
    assert openai is not None and openai.jurisdiction_basis == "general knowledge – verify"


def test_jurisdictions_cover_us_eu_and_china(sigs: Signatures) -> None:
    jurisdictions = {p.jurisdiction for p in sigs.providers}
    assert {"US", "CN", "SG", "FR", "CA", "unknown"} <= jurisdictions
    assert all(re.fullmatch(r"[A-Z]{2}|unknown", j) for j in jurisdictions)


def test_known_official_hosts_excluded_from_relays(sigs: Signatures) -> None:
    # the knowledge removed these from relay lists because they are official
    for host in ("bigmodel.cn", "www.deepseek.com"):
        assert sigs.relay_for_host(host) is None
        assert sigs.provider_for_host(host) is not None


# -- API shapes -----------------------------------------------------------------------------------


def _shape_ids(sigs: Signatures, path: str) -> list[str]:
    return [s.id for s in sigs.api_shapes if s.path_pattern.search(path)]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", ["openai.chat_completions"]),
        ("/openai/v1/chat/completions", ["openai.chat_completions"]),
        ("/compatible-mode/v1/chat/completions", ["openai.chat_completions"]),
        ("/api/paas/v4/chat/completions", ["openai.chat_completions"]),
        ("/api/v3/chat/completions", ["openai.chat_completions"]),
        ("/v1beta/openai/chat/completions", ["openai.chat_completions"]),
        ("/openai/deployments/gpt-4o/chat/completions",
         ["openai.azure_deployment_chat_completions"]),
        ("/v1/completions", ["openai.completions"]),
        ("/v1/responses", ["openai.responses"]),
        ("/v1/embeddings", ["openai.embeddings"]),
        ("/v1/messages", ["anthropic.messages"]),
        ("/anthropic/v1/messages", ["anthropic.messages"]),
        ("/api/anthropic/v1/messages", ["anthropic.messages"]),
        ("/v1/messages/count_tokens", []),
        ("/v1beta/models/gemini-2.0-flash:generateContent", ["gemini.generate_content"]),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent",
         ["gemini.stream_generate_content"]),
        ("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-pro:generateContent",
         ["gemini.generate_content"]),
        ("/api/chat", ["ollama.chat"]),
        ("/api/generate", ["ollama.generate"]),
        ("/v1/models", []),
        ("/chat", []),
    ],
)
def test_api_shape_paths(sigs: Signatures, path: str, expected: list[str]) -> None:
    assert _shape_ids(sigs, path) == expected


def test_api_shape_credentials(sigs: Signatures) -> None:
    shapes = {s.id: s for s in sigs.api_shapes}
    assert "x-api-key" in shapes["anthropic.messages"].credential_headers
    assert set(shapes["anthropic.messages"].body_keys) == {"model", "messages", "max_tokens"}
    assert "api-key" in shapes["openai.azure_deployment_chat_completions"].credential_headers
    assert shapes["gemini.generate_content"].credential_query == ("key",)
    assert "x-goog-api-key" in shapes["gemini.generate_content"].credential_headers
    assert all(h == h.lower() for s in sigs.api_shapes for h in s.credential_headers)


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_versions(sigs: Signatures) -> None:
    v = sigs.tls_versions
    assert (v[0x0002].protocol, v[0x0002].version, v[0x0002].severity) == ("ssl", "2.0", "critical")
    assert v[0x0300].severity == "critical" and v[0x0300].weak
    assert v[0x0301].severity == "high" and v[0x0302].severity == "high"
    assert not v[0x0303].weak and v[0x0303].severity is None
    assert not v[0x0304].weak and v[0x0304].severity is None
    assert sigs.version_name(0x0304) == "TLS 1.3"
    assert sigs.version_name(0x7F1C) == "0x7F1C"


@pytest.mark.parametrize(
    ("code", "name", "weaknesses", "severity"),
    [
        (0x0005, "TLS_RSA_WITH_RC4_128_SHA", ("rc4",), "high"),
        (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", ("3des", "cbc-sha1"), "high"),
        (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", ("cbc-sha1",), "low"),
        (0x1301, "TLS_AES_128_GCM_SHA256", (), None),
        (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", (), None),
        (0x0000, "TLS_NULL_WITH_NULL_NULL", ("null", "anon"), "critical"),
        (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5", ("export", "rc4", "md5"), "critical"),
        (0x0009, "TLS_RSA_WITH_DES_CBC_SHA", ("des", "cbc-sha1"), "high"),
        (0x0004, "TLS_RSA_WITH_RC4_128_MD5", ("rc4", "md5"), "high"),
        (0xC018, "TLS_ECDH_anon_WITH_AES_128_CBC_SHA", ("anon", "cbc-sha1"), "critical"),
        (0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", (), None),
        (0x010080, "SSL_CK_RC4_128_WITH_MD5", ("rc4", "md5"), "high"),
    ],
)
def test_cipher_suite_table(
    sigs: Signatures, code: int, name: str, weaknesses: tuple[str, ...], severity: str | None
) -> None:
    suite = sigs.cipher_suites[code]
    assert suite.name == name
    assert suite.weaknesses == weaknesses
    assert suite.severity == severity


def test_cipher_table_holds_no_grease_or_private_codes(sigs: Signatures) -> None:
    assert 0x0A0A not in sigs.cipher_suites  # GREASE (RFC 8701)
    assert 0xCC13 not in sigs.cipher_suites  # pre-RFC ChaCha20 draft code
    assert sigs.cipher_name(0x0A0A) == "0x0A0A"
    assert all(s.name.startswith(("TLS_", "SSL_CK_")) for s in sigs.cipher_suites.values())


def _cipher_tool() -> ModuleType:
    path = SIGNATURES_DIR / "tools" / "make_cipher_suites.py"
    spec = importlib.util.spec_from_file_location("make_cipher_suites", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cipher_tool_classifies_by_name() -> None:
    tool = _cipher_tool()
    assert tool.classify("TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA") == [
        "anon", "export", "des", "cbc-sha1"]
    assert tool.classify("TLS_SHA256_SHA256") == ["null"]
    assert tool.classify("TLS_FALLBACK_SCSV") == []
    assert tool.classify("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384") == []
    assert tool.severity(["cbc-sha1", "rc4"]) == "high"
    assert tool.severity([]) is None
    assert not tool.is_iana_code(0x1A1A) and tool.is_iana_code(0x1301)


# -- key formats ----------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits


def _key_format_ids(sigs: Signatures, text: str) -> set[str]:
    return {k.id for k in sigs.key_formats if k.pattern.search(text)}


def test_generated_fake_keys_match_their_formats(sigs: Signatures) -> None:
    anthropic_key = "sk-ant-api03-" + _random(ALNUM + "_-", 93) + "AA"
    assert {"anthropic-api-key", "anthropic-trufflehog"} <= _key_format_ids(
        sigs, f"x-api-key: {anthropic_key}\n")
    openai_key = "sk-proj-" + _random(ALNUM, 58) + "T3BlbkFJ" + _random(ALNUM, 58)
    assert "openai-api-key" in _key_format_ids(sigs, f"Bearer {openai_key} ")
    sub2api_key = "sk-" + _random("0123456789abcdef", 64)
    found = _key_format_ids(sigs, sub2api_key)
    assert "sub2api-key" in found and "openai-api-key" not in found
    gemini_key = "AIzaSy" + _random(ALNUM, 33)
    assert "google-gemini-trufflehog" in _key_format_ids(sigs, gemini_key)


def test_key_format_providers_are_provider_ids(sigs: Signatures) -> None:
    provider_ids = {p.provider for p in sigs.providers}
    # labels for keys that are not an official AI endpoint in providers.yaml
    other_labels = {"aws", "alibaba-cloud-ram", "huggingface", "langsmith", "openrouter",
                    "generic"}
    for key_format in sigs.key_formats:
        provider = key_format.provider
        assert (provider in provider_ids or provider in other_labels
                or provider.startswith("relay:")), (key_format.id, provider)
    assert not any("<UUID>" in k.regex for k in sigs.key_formats)


def test_domain_index_answers_as_a_full_scan_would() -> None:
    """The indexed lookup must pick the same entry as scanning every rule."""
    from auditor.signatures import _most_specific, load_signatures

    sigs = load_signatures()
    hosts = ["API.OpenAI.com.", "unknown.example", "x.y.openai.azure.com", "openai.azure.com"]
    for entry in [*sigs.providers, *sigs.relays]:
        if entry.rule.match != "regex":
            hosts += [entry.domain, "api." + entry.domain, "a.b." + entry.domain]
    for host in hosts:
        assert sigs.provider_for_host(host) is _most_specific(host, sigs.providers), host
        assert sigs.relay_for_host(host) is _most_specific(host, sigs.relays), host


def test_a_missing_or_plain_file_signatures_directory_is_named_as_such(tmp_path: Path) -> None:
    plain_file = tmp_path / "file"
    plain_file.write_text("", encoding="utf-8")
    for directory in (tmp_path / "absent", plain_file):
        expected = rf"^{re.escape(str(directory))}: no such directory$"
        with pytest.raises(SignatureError, match=expected):
            load_signatures(directory)
