"""The keyword pre-filter of prompt-sensitive-data never changes what is found.

Each signature entry's keywords must be literals its regex requires: every string the regex
matches (generated from the regex itself by hypothesis) contains one of them, case-folded. And a
scan with the pre-filter finds exactly what a scan running every regex finds.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.detectors.prompt_sensitive_data import matchers_for, scan_prompt
from auditor.signatures import SensitiveDataPattern, Signatures, load_signatures

SIGNATURES = load_signatures()
ENTRIES = [(e.id, e.regex, e.keywords) for e in SIGNATURES.sensitive_data] + [
    (f"api-key:{k.id}", k.regex, k.keywords) for k in SIGNATURES.key_formats
]
KEYWORD_ENTRIES = [entry for entry in ENTRIES if entry[2]]
HYPOTHESIS = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_the_expected_entries_are_prefiltered() -> None:
    with_keywords = {entry_id for entry_id, _, keywords in ENTRIES if keywords}
    for entry_id in ("private-key-block", "jwt", "connection-string-password", "email-address",
                     "phone-international", "us-ssn", "api-key:aws-access-token",
                     "api-key:anthropic-trufflehog", "api-key:groq-trufflehog"):  # fmt: skip
        assert entry_id in with_keywords
    # Most of the scan's regexes should now be skippable.
    assert len(with_keywords) > len(ENTRIES) / 2


@pytest.mark.parametrize(
    ("entry_id", "regex", "keywords"), KEYWORD_ENTRIES, ids=[e[0] for e in KEYWORD_ENTRIES]
)
def test_every_match_contains_a_keyword(
    entry_id: str, regex: str, keywords: tuple[str, ...]
) -> None:
    pattern = SIGNATURES_PATTERNS[entry_id]
    folded = [keyword.casefold() for keyword in keywords]

    @HYPOTHESIS
    @given(st.from_regex(regex))
    def check(sample: str) -> None:
        match = pattern.search(sample)
        assert match is not None
        assert any(keyword in match.group(0).casefold() for keyword in folded), match.group(0)

    check()


@pytest.mark.parametrize(("entry_id", "regex", "keywords"), ENTRIES, ids=[e[0] for e in ENTRIES])
def test_prefilter_finds_the_same_as_every_regex(
    entry_id: str, regex: str, keywords: tuple[str, ...]
) -> None:
    @HYPOTHESIS
    @given(st.from_regex(regex), st.text(max_size=40), st.text(max_size=40))
    def check(sample: str, before: str, after: str) -> None:
        text = f"{before} {sample} {after}"
        assert scan_prompt(text, SIGNATURES, reveal=True) == scan_prompt(
            text, SIGNATURES, reveal=True, prefilter=False
        )

    check()


def test_a_known_match_is_still_found_with_the_prefilter() -> None:
    # A generated, obviously fake key of each prefiltered kind inside ordinary prose.
    fake_aws = "AKIA" + "Q" * 16
    text = f"deploy with {fake_aws} and mail ops@example.com, call +1 202 555 0143"
    found = scan_prompt(text, SIGNATURES)
    assert found["secret"].counts["api-key:aws-access-token"] == 1
    assert found["pii"].counts["email-address"] == 1
    assert found["pii"].counts["phone-international"] == 1


def test_a_regex_runs_only_when_a_keyword_is_present() -> None:
    entry = SensitiveDataPattern(
        id="test-marker", category="secret", regex=r"secret\d+", validator="none",
        severity="high", source="test", keywords=("MARKER",),
    )  # fmt: skip
    signatures = Signatures(sensitive_data=[entry])
    assert scan_prompt("secret42", signatures) == {}  # no keyword: the regex did not run
    assert scan_prompt("secret42", signatures, prefilter=False)["secret"].counts["test-marker"] == 1
    assert scan_prompt("marker secret42", signatures)["secret"].counts["test-marker"] == 1
    assert [m.secret.keywords for m in matchers_for(signatures)] == [("marker",)]


SIGNATURES_PATTERNS = {
    **{e.id: e.pattern for e in SIGNATURES.sensitive_data},
    **{f"api-key:{k.id}": k.pattern for k in SIGNATURES.key_formats},
}
