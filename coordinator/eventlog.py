"""A task's event log file: one JSON event per line, appended, never rewritten.

Reading starts at the last `snapshot` line (written every few events), so the cost of
opening a log does not grow with its length: a task heartbeating for days reads a few lines,
not thousands. A crash mid-append leaves a torn last line; readers skip it and the next
append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from coordinator.events import Created, QueueEvent, Snapshot, event_from_json, event_to_json
from coordinator.record import TaskRecord

__all__ = ["LoadedLog", "encode", "load", "load_path"]

TAIL_BYTES = 32 * 1024  # read this much from the end first; snapshots are well within it
_SNAPSHOT = b'\n{"event":"snapshot"'


@dataclass(slots=True)
class LoadedLog:
    """A log as read: the record, whether the last line is torn, its inode, and how many
    events follow the last snapshot (when to write the next one)."""

    record: TaskRecord
    torn: bool
    inode: int
    since_snapshot: int
    nlink: int


def encode(event: QueueEvent) -> bytes:
    return json.dumps(event_to_json(event), separators=(",", ":")).encode() + b"\n"


def load(fd: int) -> LoadedLog | None:
    """Read the log open at `fd`; None if it does not start with a task (a create cut short)."""
    st = os.fstat(fd)
    size = st.st_size
    if size > TAIL_BYTES:
        tail = os.pread(fd, TAIL_BYTES, size - TAIL_BYTES)
        at = tail.rfind(_SNAPSHOT)
        data = tail[at + 1:] if at >= 0 else _read_all(fd)
    else:
        data = os.pread(fd, size, 0) if size else b""
    events: list[QueueEvent] = []
    for line in data.split(b"\n"):
        if line:
            try:
                events.append(event_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # torn by a crash mid-append (or being appended right now)
    start = next((i for i in range(len(events) - 1, -1, -1)
                  if isinstance(events[i], Snapshot)), 0)
    events = events[start:]
    if not events or not isinstance(events[0], Created | Snapshot):
        return None
    return LoadedLog(record=TaskRecord.from_events(events), torn=not data.endswith(b"\n"),
                     inode=st.st_ino, since_snapshot=len(events) - 1, nlink=st.st_nlink)


def load_path(path: str) -> LoadedLog | None:
    """Read the log at `path` without locking it (a snapshot, for readers)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return load(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
