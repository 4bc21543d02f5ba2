"""Result writers for the CLI (table, json, jsonl, csv) and atomic output files.

Photos give one row per image (its faces nested, or one CSV line per face); video frames
(`FrameResult`) give one row per (frame, face) with ``frame``, ``time_s``, ``track_id`` and
``raw_probs``, and one row with empty face fields for a frame without faces. A CSV that holds
videos has one header with the columns of both.

Every format carries a failed input's ``error``, ``error_code`` and ``error_stage``, and none
crashes on a file name: any name the OS allows is written, through `display_name`, the way
each format escapes text (CSV quoting, JSON string escapes, a terminal table with control
characters shown as ``\\n``, ``\\x1b``, …).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TextIO

from emovit.fileio import atomic_output
from emovit.results import FaceResult, FrameResult, ImageResult

__all__ = [
    "OutputFormat",
    "ResultWriter",
    "atomic_output",
    "display_name",
    "result_rows",
    "rich_console",
    "table_width",
]

OutputFormat = Literal["table", "json", "jsonl", "csv"]

#: Results per printed table (`table` format): what the writer holds at most.
TABLE_CHUNK = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_name(source: str, *, controls: bool = False) -> str:
    r"""`source` as text that every output can hold.

    Bytes that are not UTF-8 (a file name from ``os.listdir`` holds them as surrogate escapes)
    become backslash escapes, so ``bad_\xff.jpg`` reads as the bytes it names; all else is
    kept. With `controls`, control characters are escaped too (``\n``, ``\x1b``): for terminal
    tables and file names, where they would break lines or drive the terminal.

    Examples:
        >>> display_name(b"bad_\xff.jpg".decode("utf-8", "surrogateescape"))
        'bad_\\xff.jpg'
        >>> display_name("two\nlines.jpg", controls=True)
        'two\\nlines.jpg'
    """
    try:
        text = source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no byte produced
        text = source.encode("utf-8", "backslashreplace").decode("utf-8")
    if controls:
        text = _CONTROL.sub(lambda m: _NAMED_CONTROLS.get(m[0], f"\\x{ord(m[0]):02x}"), text)
    return text


def rich_console(file: Any = None, *, is_tty: bool = False, **options: Any) -> Any:
    """A rich console writing to `file` (default stdout), `table_width` wide; a reader that
    goes away (``| head``) raises BrokenPipeError (the commands' exit 141), where rich's own
    console exits 1 on its own."""
    return _pipe_console_class()(file=file, width=table_width(is_tty), no_color=not is_tty, **options)


@functools.cache
def _pipe_console_class() -> Any:
    """rich's Console, a broken pipe raised (made once: rich is imported only when needed)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console


def table_width(is_tty: bool) -> int | None:
    """The width of a table drawn by rich: a terminal's own (None); piped, ``COLUMNS`` where it
    is set to a number (``COLUMNS=250 emovit predict … | less``; 80 at least: narrower, the
    labels were cut), else 140."""
    if is_tty:
        return None
    columns = os.environ.get("COLUMNS", "").strip()
    return max(int(columns), 80) if columns.isdecimal() and int(columns) > 0 else 140


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    row["source"] = display_name(row["source"])
    if row["error"] is not None:
        row["error"] = display_name(row["error"])
    return row


def result_rows(result: ImageResult, top_k: int | None = None) -> list[dict[str, Any]]:
    """The JSON rows of one result, as ``--format json``/``jsonl`` write them: one for a photo
    (its faces nested), one per face for a video frame (one with empty face fields for a
    frame without faces), names made printable (`display_name`). Every door that writes rows
    (the CLI, `emovit.ray`) builds them here.

    Examples:
        >>> result_rows(ImageResult(source="a.jpg"))[0]["ok"]
        True
    """
    if isinstance(result, FrameResult):
        return [_clean(row) for row in result.rows(top_k)]
    return [_clean(result.to_dict(top_k))]


class ResultWriter:
    """Writes results in one format; jsonl and csv stream row by row, json and table at the end.

    `video` adds the video columns to the CSV header from the start (a run that mixes photos
    and videos); without it they appear when the first result is a video frame. `live` (a
    camera among the inputs) prints the table's rows as they come, in fixed columns under one
    header, instead of a table every few hundred results."""

    def __init__(
        self,
        stream: TextIO,
        fmt: OutputFormat,
        labels: Sequence[str],
        top_k: int | None = None,
        *,
        video: bool = False,
        live: bool = False,
    ) -> None:
        self.stream, self.fmt, self.labels, self.top_k = stream, fmt, tuple(labels), top_k
        self.video, self.live = video, live
        self._pending: list[ImageResult] = []
        self._tables = 0  # tables printed (a table every TABLE_CHUNK results)
        self._json_rows = 0
        self._csv: Any = None
        self._csv_quoted: Any = None

    def _dicts(self, result: ImageResult) -> list[dict[str, Any]]:
        return result_rows(result, self.top_k)

    def _csv_rows(self, result: ImageResult) -> Iterator[list[Any]]:
        faces: list[FaceResult | None] = [*result.faces] or [None]
        for index, face in enumerate(faces):
            box = list(face.box) if face is not None and face.box is not None else [""] * 4
            row: list[Any] = [
                display_name(result.source),
                "ok" if result.ok else "error",
                display_name(result.error or ""),
                result.error_code or "",
                result.error_stage or "",
                index if face is not None else "",
                *box,
                face.label if face is not None else "",
                f"{face.score:.6f}" if face is not None else "",
            ]
            row += [f"{face.probs.get(lab, 0.0):.6f}" if face is not None else "" for lab in self.labels]
            if self.video:
                row += self._video_cells(result, face)
            yield row

    def _video_cells(self, result: ImageResult, face: FaceResult | None) -> list[Any]:
        """frame, time_s, track_id, detection_score and raw_prob_* (blank for a photo)."""
        blank = [""] * (4 + len(self.labels))
        if not isinstance(result, FrameResult):
            return blank
        cells: list[Any] = [
            "" if result.frame is None else result.frame,
            "" if result.time_s is None else f"{result.time_s:.6f}",
        ]
        if face is None:
            return cells + blank[2:]
        cells += ["" if face.track_id is None else face.track_id]
        cells += ["" if face.detection_score is None else f"{face.detection_score:.6f}"]
        raw = face.raw_probs or {}
        return cells + [f"{raw[lab]:.6f}" if lab in raw else "" for lab in self.labels]

    def _write_csv(self, result: ImageResult) -> None:
        if self._csv is None:
            self._csv = csv.writer(self.stream, lineterminator="\n")
            # csv quotes a field holding "\n" but not one holding a lone "\r" when lines end in
            # "\n"; rows with one are written fully quoted, so that every reader splits them right.
            self._csv_quoted = csv.writer(self.stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
            header = ["source", "status", "error", "error_code", "error_stage", "face"]
            header += ["x1", "y1", "x2", "y2", "label", "score"]
            header += [f"prob_{lab}" for lab in self.labels]
            self.video = self.video or isinstance(result, FrameResult)
            if self.video:
                header += ["frame", "time_s", "track_id", "detection_score"]
                header += [f"raw_prob_{lab}" for lab in self.labels]
            self._csv.writerow(header)
        for row in self._csv_rows(result):
            carriage = any(isinstance(field, str) and "\r" in field for field in row)
            (self._csv_quoted if carriage else self._csv).writerow(row)

    def write(self, result: ImageResult) -> None:
        if self.fmt == "jsonl":
            self.stream.write("".join(json.dumps(row) + "\n" for row in self._dicts(result)))
        elif self.fmt == "csv":
            self._write_csv(result)
        elif self.fmt == "json":  # streamed too: a long video never piles up in memory
            for row in self._dicts(result):
                self.stream.write(",\n" if self._json_rows else "[\n")
                self.stream.write(textwrap.indent(json.dumps(row, indent=2), "  "))
                self._json_rows += 1
        else:  # a table of a few hundred results at a time: a long video never piles up either
            self._pending.append(result)
            if self.live or len(self._pending) >= TABLE_CHUNK:
                self._write_table()
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self._json_rows else "[]\n")
        elif self.fmt == "table" and (self._pending or not self._tables):
            self._write_table()
        self.stream.flush()

    def _write_table(self) -> None:
        from rich.table import Table
        from rich.text import Text

        def cell(text: str, style: str = "") -> Text:  # Text: names are never read as markup
            return Text(display_name(text, controls=True), style=style)

        k = self.top_k or 3
        # live: a few rows at a time under one header, in columns of fixed widths that line up
        table = (
            Table(box=None, show_header=not self._tables, header_style="bold", pad_edge=False)
            if self.live
            else Table(show_lines=False, header_style="bold")
        )
        source_width, label_width, score_width = (36, 18, 5) if self.live else (None, None, None)
        table.add_column("source", overflow="fold", width=source_width)
        table.add_column("label", width=label_width)
        table.add_column("score", justify="right", width=score_width)
        table.add_column(f"top {k}", overflow="fold")
        for result in self._pending:
            source = cell(result.source)
            if isinstance(result, FrameResult) and result.time_s is not None:
                source = cell(f"{result.source} @ {result.time_s:.2f} s (frame {result.frame})")
            if not result.ok:
                where = f"{result.error_code or 'error'} at {result.error_stage or '?'}"
                table.add_row(source, cell("error", "red"), "", cell(f"{where}: {result.error}", "red"))
                continue
            if not result.faces:
                table.add_row(source, cell("no face", "yellow"), "", "")
            for index, face in enumerate(result.faces):
                tops = ", ".join(f"{lab} {s:.2f}" for lab, s in face.top_k(k))
                label = face.label if face.track_id is None else f"#{face.track_id} {face.label}"
                if face.track_id is None and len(result.faces) > 1:  # which is which: the csv's face index
                    label = f"face {index}: {label}"
                table.add_row(source, label, f"{face.score:.3f}", tops)
        self._pending.clear()
        self._tables += 1
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        console = rich_console(self.stream, is_tty=is_tty)
        console.print(table)
