"""Result writers for the CLI (table, json, jsonl, csv) and atomic output files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

from emovit.fileio import atomic_output
from emovit.results import ImageResult

__all__ = ["OutputFormat", "ResultWriter", "atomic_output"]

OutputFormat = Literal["table", "json", "jsonl", "csv"]


class ResultWriter:
    """Writes results in one format; jsonl and csv stream row by row, json and table at the end."""

    def __init__(
        self, stream: TextIO, fmt: OutputFormat, labels: Sequence[str], top_k: int | None = None
    ) -> None:
        self.stream, self.fmt, self.labels, self.top_k = stream, fmt, tuple(labels), top_k
        self._pending: list[ImageResult] = []
        self._csv: Any = None

    def _csv_rows(self, result: ImageResult) -> Iterator[list[Any]]:
        faces = result.faces or [None]
        for index, face in enumerate(faces):
            box = list(face.box) if face is not None and face.box is not None else [""] * 4
            row: list[Any] = [
                result.source,
                "ok" if result.ok else "error",
                result.error or "",
                index if face is not None else "",
                *box,
                face.label if face is not None else "",
                f"{face.score:.6f}" if face is not None else "",
            ]
            row += [f"{face.probs.get(lab, 0.0):.6f}" if face is not None else "" for lab in self.labels]
            yield row

    def write(self, result: ImageResult) -> None:
        if self.fmt == "jsonl":
            self.stream.write(result.to_json(self.top_k) + "\n")
        elif self.fmt == "csv":
            if self._csv is None:
                self._csv = csv.writer(self.stream, lineterminator="\n")
                header = ["source", "status", "error", "face", "x1", "y1", "x2", "y2", "label", "score"]
                self._csv.writerow(header + [f"prob_{lab}" for lab in self.labels])
            self._csv.writerows(self._csv_rows(result))
        else:
            self._pending.append(result)
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            json.dump([r.to_dict(self.top_k) for r in self._pending], self.stream, indent=2)
            self.stream.write("\n")
        elif self.fmt == "table":
            self._write_table()
        elif self.fmt == "csv" and self._csv is None:
            self._pending.clear()
        self.stream.flush()

    def _write_table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        k = self.top_k or 3
        table = Table(show_lines=False, header_style="bold")
        table.add_column("source", overflow="fold")
        table.add_column("label")
        table.add_column("score", justify="right")
        table.add_column(f"top {k}")
        for result in self._pending:
            if not result.ok:
                table.add_row(result.source, "[red]error[/red]", "", f"[red]{result.error}[/red]")
                continue
            if not result.faces:
                table.add_row(result.source, "[yellow]no face[/yellow]", "", "")
            for face in result.faces:
                tops = ", ".join(f"{lab} {s:.2f}" for lab, s in face.top_k(k))
                table.add_row(result.source, face.label, f"{face.score:.3f}", tops)
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        console = Console(file=self.stream, no_color=not is_tty, width=None if is_tty else 140)
        console.print(table)
