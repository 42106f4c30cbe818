"""Reading the YAML files (signatures, policy, configuration), through a cache of their content.

Parsing ``signatures/`` costs ~35 ms of every run's start-up (libyaml parses, PyYAML's Python
constructor builds ~13,000 objects) and importing PyYAML ~10 ms more, while the same documents
load from JSON in ~1 ms. So ``load_yaml`` keeps each file's parsed document as JSON in the
user's cache directory and uses it while the file's content is unchanged:

- an entry holds the SHA-256 of the text it was parsed from, and is used only when the file's
  text has that hash: any change of the file is a miss (one entry per file path, rewritten);
- JSON holds data, never code (no pickle); a document is cached only when JSON gives it back
  equal (dates, sets, tuples, non-string keys or NaN are not: such a file is always parsed);
- the cache is used only in a directory of the user's own that no one else can write to; a
  missing, unwritable, corrupt or half-written cache works as an empty one: the file is parsed.

The key is the text, not the PyYAML release: its safe loading of a given text is stable (and
the same with or without libyaml); ``CACHE_FORMAT`` changes when this module's reading does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1  # bump when an entry's layout or how a file is read changes
_MISS = object()


class YAMLSyntaxError(ValueError):
    """The file is not valid YAML; the message is PyYAML's."""


def cache_directory() -> Path:
    """``$XDG_CACHE_HOME/ai-egress-auditor/yaml``, else ``~/.cache/ai-egress-auditor/yaml``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-egress-auditor" / "yaml"


def load_yaml(path: Path) -> Any:
    """The document in the YAML file ``path``, as PyYAML's safe loader reads it.

    Raises what reading the file raises (``OSError``, ``UnicodeDecodeError``) and
    ``YAMLSyntaxError`` when it is not valid YAML; the cache never adds an error.
    """
    text = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    entry_path = _entry_path(path)
    if entry_path is not None:
        cached = _read_entry(entry_path, digest)
        if cached is not _MISS:
            return cached
    document = _parse(text)
    if entry_path is not None:
        _write_entry(entry_path, digest, document)
    return document


def _parse(text: str) -> Any:
    import yaml  # only on a cache miss: its import is a third of what the cache saves

    try:
        # libyaml's loader when PyYAML was built with it: ~10x faster than the Python one.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(str(exc)) from None


def _entry_path(path: Path) -> Path | None:
    """Where ``path``'s entry is kept, or None when the cache directory is not safe to use."""
    try:
        directory = cache_directory()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.stat()
    except (OSError, RuntimeError):  # RuntimeError: no home directory to put it in
        return None
    # Someone else who can write there could plant a wrong document for a file's hash.
    if hasattr(os, "getuid") and (status.st_uid != os.getuid() or status.st_mode & 0o022):
        return None
    name = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return directory / f"{name}.json"


def _read_entry(entry_path: Path, digest: str) -> Any:
    """The entry's document if it was parsed from text with this digest, else ``_MISS``."""
    try:
        entry = json.loads(entry_path.read_bytes())
    except (OSError, ValueError):  # none yet, unreadable, or not (complete) JSON
        return _MISS
    if (
        isinstance(entry, dict)
        and entry.get("format") == CACHE_FORMAT
        and entry.get("sha256") == digest
        and "document" in entry
    ):
        return entry["document"]
    return _MISS


def _write_entry(entry_path: Path, digest: str, document: Any) -> None:
    """Cache ``document`` if JSON gives it back equal; any failure only leaves no entry."""
    import threading

    try:
        # ASCII: PyYAML's Python loader reads "\ud800" as a lone surrogate, UTF-8 cannot.
        text = json.dumps({"format": CACHE_FORMAT, "sha256": digest, "document": document})
    except (TypeError, ValueError):  # dates, binary, sets, ...: not JSON
        return
    if json.loads(text)["document"] != document:
        return
    # Written aside and renamed: a reader sees the old entry or the whole new one.
    partial = entry_path.with_name(f"{entry_path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, entry_path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
