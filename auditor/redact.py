"""Redaction of evidence: what the auditor writes about secrets and prompts.

By default a finding never carries a full key or prompt: keys become a short prefix, their
length and a SHA-256 prefix (enough to recognise the same key again, not to use it), and
prompt text becomes a short excerpt with secrets inside it masked. ``reveal=True`` (policy
``reveal_evidence``) turns this off for sites that store findings as securely as prompts.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

# Generic shapes of secrets worth masking in excerpts even when no key format matches:
# long runs of key-like characters after a typical prefix, bearer tokens, JWTs.
_GENERIC_SECRET = re.compile(
    r"(?:sk|pk|rk|ak|key|tok|token|AIza|ghp|gho|xox[abpr])[-_A-Za-z0-9]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|(?<![A-Za-z0-9])[A-Za-z0-9_-]{40,}(?![A-Za-z0-9])"
)


# Longest secret a pattern is expected to match (API keys run to ~200 characters, JWTs more):
# text this far past the excerpt's end is masked too, so a key crossing the cut stays masked.
MAX_SECRET_CHARS = 1024


@functools.lru_cache(maxsize=4096)  # one key is masked and filed by several detectors
def fingerprint(secret: str) -> str:
    """A stable, non-reversible id for a secret: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def mask_secret(secret: str, reveal: bool = False) -> str:
    """'sk-pr…(51 chars, sha256:1a2b3c4d5e6f)' unless ``reveal``."""
    if reveal:
        return secret
    keep = 4 if len(secret) >= 16 else 0
    return f"{secret[:keep]}…({len(secret)} chars, sha256:{fingerprint(secret)})"


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """A secret's regex and the literals one of which every match contains (case-folded)."""

    pattern: re.Pattern[str]
    keywords: tuple[str, ...] = ()  # empty: no literal known, the regex always runs

    @classmethod
    def of(cls, pattern: re.Pattern[str], keywords: Iterable[str] = ()) -> SecretPattern:
        return cls(pattern, tuple(keyword.casefold() for keyword in keywords))


class SecretPatterns:
    """Secret patterns in order, with an index of their keywords: which of them may match a
    text is one substring test per distinct keyword, not a call per pattern (a regex pass
    that cannot match costs far more than either). Built once per pattern list."""

    __slots__ = ("_always", "_by_keyword", "patterns")

    def __init__(self, patterns: Iterable[SecretPattern]) -> None:
        self.patterns = tuple(patterns)
        self._always = tuple(i for i, secret in enumerate(self.patterns) if not secret.keywords)
        by_keyword: dict[str, list[int]] = {}
        for index, secret in enumerate(self.patterns):
            for keyword in secret.keywords:
                by_keyword.setdefault(keyword, []).append(index)
        self._by_keyword = {keyword: tuple(found) for keyword, found in by_keyword.items()}

    def __iter__(self) -> Iterator[SecretPattern]:
        return iter(self.patterns)

    def may_occur_in(self, folded_text: str) -> Sequence[int]:
        """Indexes, in order, of the patterns that can match a text whose case-folded form is
        ``folded_text``: those without keywords and those with a keyword in it."""
        present = [keyword for keyword in self._by_keyword if keyword in folded_text]
        if not present:
            return self._always
        indexes = set(self._always)
        for keyword in present:
            indexes.update(self._by_keyword[keyword])
        return sorted(indexes)


NO_PATTERNS = SecretPatterns(())


def _masked(match: re.Match[str]) -> str:
    return mask_secret(match.group(0))


@functools.lru_cache(maxsize=8)  # one list of key patterns per signature set in use
def _with_generic(patterns: SecretPatterns) -> SecretPatterns:
    """``patterns``, then the generic secret shapes."""
    return SecretPatterns((*patterns, SecretPattern(_GENERIC_SECRET)))


def mask_in_text(text: str, patterns: SecretPatterns = NO_PATTERNS) -> str:
    """``text`` with every match of ``patterns`` (and generic secret shapes) masked, in order."""
    patterns = _with_generic(patterns)
    # casefold, not lower: re.IGNORECASE also equates "ſ" with "s" and the Kelvin sign with "k",
    # which casefold maps too, so a (?i) match's keyword is still found in the folded text.
    first = 0  # patterns before this one have run
    while True:
        for index in patterns.may_occur_in(text.casefold()):
            if index < first:
                continue
            text, masked = patterns.patterns[index].pattern.subn(_masked, text)
            if masked:  # the masks are text the next patterns see: ask the keywords again
                first = index + 1
                break
        else:
            return text


def excerpt(
    text: str,
    limit: int = 80,
    reveal: bool = False,
    patterns: SecretPatterns = NO_PATTERNS,
) -> str:
    """A short, secret-masked excerpt of ``text`` (the whole text when ``reveal``)."""
    if reveal:
        return text
    # Mask before cutting, so a key cut in half at the limit is still masked; only the part
    # of the text that can reach the excerpt is masked (prompts run to tens of kilobytes).
    window = limit + MAX_SECRET_CHARS
    flat = " ".join(text[: 8 * window].split())
    if len(flat) < window and len(text) > 8 * window:  # mostly white space: take it all
        flat = " ".join(text.split())
    longer = len(flat) > limit
    flat = mask_in_text(flat[:window], patterns)
    return flat[:limit] + ("…" if longer or len(flat) > limit else "")


def text_digest(text: str) -> str:
    """SHA-256 of a prompt, so identical prompts can be correlated without storing them."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
