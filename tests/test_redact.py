from __future__ import annotations

import re
import secrets

from auditor.redact import (
    SecretPattern,
    SecretPatterns,
    excerpt,
    fingerprint,
    mask_in_text,
    mask_secret,
)


def fake_key() -> str:
    return "sk-proj-FAKE" + secrets.token_hex(24)


def test_masked_key_keeps_only_prefix_length_and_hash() -> None:
    key = fake_key()
    masked = mask_secret(key)
    assert key not in masked and key[8:] not in masked
    assert masked.startswith("sk-p…") and f"({len(key)} chars" in masked
    assert fingerprint(key) in masked
    assert mask_secret(key, reveal=True) == key


def test_excerpt_masks_secrets_even_when_cut_at_the_limit() -> None:
    key = fake_key()
    text = "x" * 70 + " " + key + " tail"
    out = excerpt(text, limit=80)
    assert key[:12] not in out
    assert len(out) <= 81


def test_excerpt_reveal_returns_whole_text() -> None:
    assert excerpt("a" * 500, limit=10, reveal=True) == "a" * 500


def test_excerpt_of_a_long_prompt_masks_a_key_that_crosses_the_cut() -> None:
    key = "sk-ant-api03-FAKE" + secrets.token_hex(40)
    text = ("word " * 15) + key + (" filler" * 20_000)
    out = excerpt(text, limit=100)
    assert key[:20] not in out and out.endswith("…")
    assert out.startswith("word word")


def test_a_pattern_runs_only_when_one_of_its_keywords_is_in_the_text() -> None:
    secret = SecretPattern.of(re.compile(r"secret\d+"), ["MARKER"])
    assert secret.keywords == ("marker",)
    only = SecretPatterns([secret])
    assert mask_in_text("secret42", only) == "secret42"  # no keyword: not run
    assert "secret42" not in mask_in_text("Marker secret42", only)
    every_regex = SecretPatterns([SecretPattern(secret.pattern)])
    assert "secret42" not in mask_in_text("secret42", every_regex)


def test_masks_of_one_pattern_are_seen_by_the_next() -> None:
    # The first mask brings the second pattern's keyword into the text.
    first = SecretPattern.of(re.compile(r"key-\d{20}"), ["key-"])
    second = SecretPattern.of(re.compile(r"…\(24 chars"), ["24 chars"])
    both = SecretPatterns([first, second])
    assert mask_in_text("key-" + "1" * 20, both).startswith("key-…(10 chars")


def test_patterns_that_may_occur_are_those_without_keywords_or_with_one_present() -> None:
    always = SecretPattern(re.compile(r"\d{6}"))
    prefixed = SecretPattern.of(re.compile(r"ab-\w+"), ["AB-"])
    either = SecretPattern.of(re.compile(r"(?:ab|cd)_\w+"), ["ab_", "cd_"])
    also_ab = SecretPattern.of(re.compile(r"ab-\d+"), ["ab-"])
    patterns = SecretPatterns([always, prefixed, either, also_ab])
    assert list(patterns) == [always, prefixed, either, also_ab]
    assert list(patterns.may_occur_in("nothing here")) == [0]
    assert list(patterns.may_occur_in("x cd_1 ab-2")) == [0, 1, 2, 3]
    assert list(patterns.may_occur_in("cd_1 and ab_2")) == [0, 2]
