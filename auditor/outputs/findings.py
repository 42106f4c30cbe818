"""Findings and the per-host table as JSON, JSON lines, CSV or Parquet.

- ``json``: one document ``{"summary", "hosts", "findings"}``.
- ``jsonl``: one finding per line (for log shippers).
- ``csv`` / ``parquet``: the per-host table (``view="hosts"``) or the findings (``"findings"``).
Evidence was redacted by the detectors; this module only serialises.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO, Any

from auditor.hosts import HOST_COLUMNS
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


def _table_rows(result: AnalysisResult, view: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows and columns of the CSV/Parquet table: one per host, or one per finding."""
    if view == "hosts":
        return result.hosts.records(), HOST_COLUMNS
    rows = []
    for f in result.findings:
        row = f.to_dict()
        row["evidence"] = json.dumps(row["evidence"], ensure_ascii=False, sort_keys=True)
        rows.append(row)
    return rows, FINDING_COLUMNS


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    # The csv module rather than pandas, whose import alone (~0.4 s) costs more than the rows.
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def result_document(result: AnalysisResult, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "hosts": result.hosts.records(),
        "findings": [f.to_dict() for f in result.findings],
    }


# One encoder for every item (json.dumps builds one per call). Items are trees of plain values
# made by to_dict()/records(), so the circular-reference bookkeeping is skipped.
_compact_json = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _document_json(document: dict[str, Any]) -> str:
    """``document`` as JSON, indented, except that each item of a top-level list (a host, a
    finding) is one compact line.

    ``json.dumps(indent=...)`` runs Python's pure-Python encoder (~0.5 s for the 5,000 findings
    of a big capture); a compact item goes through the C encoder, and one item per line still
    reads (and diffs, and greps) well.
    """
    members = []
    for name, value in document.items():
        if isinstance(value, list) and value:
            text = "[\n    " + ",\n    ".join(map(_compact_json, value)) + "\n  ]"
        else:  # small: indented the usual way (JSON strings hold no raw newlines to shift)
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        members.append(f"  {json.dumps(name)}: {text}")
    return "{\n" + ",\n".join(members) + "\n}\n"


def write_result(
    result: AnalysisResult,
    fmt: str,
    stream: IO[str] | None,
    path: Path | None,
    summary: dict[str, Any],
    view: str = "hosts",
) -> None:
    """Write ``result`` in ``fmt`` to ``path`` (or ``stream`` for text formats)."""
    if fmt == "json":
        _write_text(_document_json(result_document(result, summary)), stream, path)
    elif fmt == "jsonl":
        lines = "".join(
            json.dumps(f.to_dict(), ensure_ascii=False, sort_keys=True) + "\n"
            for f in result.findings
        )
        _write_text(lines, stream, path)
    elif fmt == "csv":
        _write_text(_csv_text(*_table_rows(result, view)), stream, path)
    elif fmt == "parquet":
        if path is None:
            raise ValueError("--format parquet writes a binary file: give --output PATH")
        import pandas as pd

        rows, columns = _table_rows(result, view)
        pd.DataFrame.from_records(rows, columns=columns).to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _write_text(text: str, stream: IO[str] | None, path: Path | None) -> None:
    if path is not None:
        path.write_text(text, encoding="utf-8")
    elif stream is not None:
        stream.write(text)
