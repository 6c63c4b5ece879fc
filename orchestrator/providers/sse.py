"""`SseDecoder`: server-sent events from a byte stream, as the event-stream spec parses them.

Fed whatever chunks the socket delivers, it yields each complete event as `(event, data)`:
the `event:` name (None when the event had none) and its `data:` lines joined with newlines.
Comment lines (`:` first) and `id:` / `retry:` fields are read and dropped; lines may end in
LF, CRLF or CR.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["SseDecoder"]


class SseDecoder:
    """Incremental SSE parsing: `feed(chunk)` yields the events `chunk` completed."""

    def __init__(self) -> None:
        self._pending = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[tuple[str | None, str]]:
        """The events completed by `chunk` (bytes after the last line end wait for more)."""
        buffer = self._pending + chunk
        tail = b""
        if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: decide with the next chunk
            buffer, tail = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._pending = lines.pop() + tail
        for raw in lines:
            event = self._line(raw.decode("utf-8"))
            if event is not None:
                yield event

    def _line(self, line: str) -> tuple[str | None, str] | None:
        if not line:  # a blank line dispatches the event gathered so far
            event, data = self._event, self._data
            self._event, self._data = None, []
            if event is None and not data:
                return None
            return event, "\n".join(data)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None
