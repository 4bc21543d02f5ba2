"""In-memory multipart/form-data parsing (python-multipart's streaming parser), so uploads are
never spooled to disk as Starlette's form parser does for parts over 1 MB."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FormPart", "MultipartError", "TooManyPartsError", "parse_multipart"]


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


class TooManyPartsError(ValueError):
    """The body holds more parts than allowed (found while splitting it): of the counted field
    (`counted`), or of any name."""

    def __init__(self, message: str, *, counted: bool) -> None:
        super().__init__(message)
        self.counted = counted


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


#: Parts of other names a body may hold beside `max_parts` counted ones (form fields).
OTHER_PARTS = 16


def parse_multipart(
    body: bytes, content_type: str, *, max_parts: int | None = None, counted: str = "files"
) -> list[FormPart]:
    """Split a multipart body into its parts (name, filename, content type, bytes).

    With `max_parts`, splitting stops with `TooManyPartsError` at the first part named `counted`
    over that many, or at the first part of any name over ``max_parts + OTHER_PARTS`` (a body
    of thousands of tiny parts is never split whole first). A body that ends before its
    closing boundary is a `MultipartError`: its last part was cut short.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart body without a boundary")
    parts: list[FormPart] = []
    header_name = bytearray()
    header_value = bytearray()
    headers: dict[str, str] = {}
    ended = False
    counted_parts = 0

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_name.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal counted_parts
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == counted:
            counted_parts += 1
            if max_parts is not None and counted_parts > max_parts:
                raise TooManyPartsError(f"more than {max_parts} parts named {counted!r}", counted=True)
        if max_parts is not None and len(parts) >= max_parts + OTHER_PARTS:
            raise TooManyPartsError(f"more than {max_parts + OTHER_PARTS} parts in all", counted=False)
        filename = disposition.get(b"filename")
        parts.append(
            FormPart(
                name=name,
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=headers.get("content-type"),
            )
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except TooManyPartsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser raises its own error types
        raise MultipartError(f"malformed multipart body ({exc})") from None
    if not ended:
        raise MultipartError("the multipart body ends before its closing boundary (a part was cut short)")
    return parts
