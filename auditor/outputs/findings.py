"""Findings and the per-host table as JSON, JSON lines, CSV or Parquet.

- ``json``: one document ``{"summary", "hosts", "findings"}``.
- ``jsonl``: one finding per line (for log shippers).
- ``csv`` / ``parquet``: the per-host table (``view="hosts"``) or the findings (``"findings"``).
Evidence was redacted by the detectors; this module only serialises.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from auditor.hosts import HOST_COLUMNS
from auditor.model import Finding
from auditor.pipeline import AnalysisResult

FORMATS = ("table", "json", "jsonl", "csv", "parquet")
VIEWS = ("hosts", "findings")
FINDING_COLUMNS = [
    "detector",
    "kind",
    "severity",
    "host",
    "title",
    "evidence",
    "first_seen",
    "last_seen",
    "count",
    "dst_ip",
    "dst_port",
    "src_ip",
]


def _table_rows(result: AnalysisResult, view: str) -> tuple[Iterable[dict[str, Any]], list[str]]:
    """The rows and columns of the CSV/Parquet table: one per host, or one per finding."""
    if view == "hosts":
        return result.hosts.records(), HOST_COLUMNS
    return map(_finding_row, result.findings), FINDING_COLUMNS


def _finding_row(finding: Finding) -> dict[str, Any]:
    row = finding.to_dict()
    row["evidence"] = json.dumps(row["evidence"], ensure_ascii=False, sort_keys=True)
    return row


# One encoder for every item (json.dumps builds one per call). Items are trees of plain values
# made by to_dict()/records(), so the circular-reference bookkeeping is skipped.
_compact_json = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def write_json_document(members: Iterable[tuple[str, Any]], out: IO[str]) -> None:
    """The JSON object of ``members`` (name, value) to ``out``, indented, except that each item
    of a list or iterator value (a host, a finding) is one compact line.

    Items are encoded and written one at a time, so the output of a capture with many findings
    never exists as one string (peak memory stays flat as captures grow). ``json.dumps(indent=
    ...)`` would run Python's pure-Python encoder (~0.5 s for the 5,000 findings of a big
    capture); a compact item goes through the C encoder, and one item per line still reads (and
    diffs, and greps) well.
    """
    out.write("{")
    separator = "\n"
    for name, value in members:
        out.write(f"{separator}  {json.dumps(name)}: ")
        separator = ",\n"
        if isinstance(value, (list, Iterator)):
            item_separator = "[\n    "
            for item in value:
                out.write(item_separator)
                out.write(_compact_json(item))
                item_separator = ",\n    "
            out.write("[]" if item_separator == "[\n    " else "\n  ]")
        else:  # small: indented the usual way (JSON strings hold no raw newlines to shift)
            out.write(json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  "))
    out.write("\n}\n")


def write_result(
    result: AnalysisResult,
    fmt: str,
    stream: IO[str] | None,
    path: Path | None,
    summary: dict[str, Any],
    view: str = "hosts",
) -> None:
    """Write ``result`` in ``fmt`` to ``path`` (or ``stream`` for text formats), a host or a
    finding at a time."""
    if fmt == "parquet":
        if path is None:
            raise ValueError("--format parquet writes a binary file: give --output PATH")
        import pandas as pd

        rows, columns = _table_rows(result, view)
        pd.DataFrame.from_records(list(rows), columns=columns).to_parquet(path, index=False)
        return
    if fmt not in FORMATS or fmt == "table":
        raise ValueError(f"unknown format {fmt!r}")
    with _text_output(stream, path) as out:
        if fmt == "json":
            members = (
                ("summary", summary),
                ("hosts", result.hosts.records()),
                ("findings", map(Finding.to_dict, result.findings)),
            )
            write_json_document(members, out)
        elif fmt == "jsonl":
            for finding in result.findings:
                out.write(json.dumps(finding.to_dict(), ensure_ascii=False, sort_keys=True))
                out.write("\n")
        else:  # csv; the csv module rather than pandas, whose import alone (~0.4 s) costs more
            rows, columns = _table_rows(result, view)
            writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


@contextmanager
def _text_output(stream: IO[str] | None, path: Path | None) -> Iterator[IO[str]]:
    """``path`` opened for writing text, else ``stream``."""
    if path is None:
        if stream is None:
            raise ValueError("no output given")
        yield stream
        return
    with path.open("w", encoding="utf-8") as out:
        yield out
