"""`AgentMemory`: what the fleet did, what it changed, and what not to try again."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, Select, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from memory_db.engine import open_engine, transaction
from memory_db.errors import UnknownRecord
from memory_db.models import (
    AttemptOutcome,
    AttemptRow,
    ConfigSnapshotRow,
    DeadEndRow,
    LearnerStateRow,
    ModificationOutcome,
    ModificationRow,
    TaskRow,
    TelemetryRow,
)
from memory_db.records import (
    AttemptRecord,
    ConfigSnapshotRecord,
    DeadEndRecord,
    ModificationRecord,
    TaskRecord,
    TelemetryRecord,
)
from memory_db.redact import redact_json, redact_secrets
from memory_db.schema import ensure_schema

__all__ = ["DEFAULT_LIMIT", "AgentMemory"]

DEFAULT_LIMIT = 100
"""How many records a listing returns unless asked for another number."""

_RowT = TypeVar("_RowT")
_RecordT = TypeVar("_RecordT")
_EnumT = TypeVar("_EnumT", AttemptOutcome, ModificationOutcome)


class AgentMemory:
    """The agent memory on one database; every call is its own transaction.

    Free text (titles, prompts, reasons, evidence, descriptions, config values) is scrubbed
    of API keys before it is stored. Methods return frozen records or ids, never ORM rows.
    Unknown ids raise `UnknownRecord`; bad arguments raise `ValueError` naming them.
    Safe to use from many processes at once (each opens its own `AgentMemory`).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (and create or migrate) the memory at `url`, or on an existing `engine`.

        `clock` returns epoch seconds. Raises `SchemaTooNew` for a database written by a
        newer prompt-orchestrator, `MigrationFailed` if upgrading an older one fails.
        Pass an engine made by `open_engine` (it sets up SQLite's WAL and write locking);
        an engine passed in is not disposed by `close()`.
        """
        if url is not None and engine is not None:
            raise ValueError(f"pass url or engine, not both (url={url!r})")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._owns_engine = engine is None
        self._engine = open_engine(url) if engine is None else engine
        try:
            ensure_schema(self._engine, clock=clock)
        except BaseException:
            self.close()
            raise

    @property
    def engine(self) -> Engine:
        """The engine underneath, for read-only queries (`memory_db.queries`)."""
        return self._engine

    def close(self) -> None:
        """Release the database connections (only if this memory opened the engine)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- tasks ------------------------------------------------------------------------

    def record_task(
        self,
        task_id: str,
        *,
        title: str,
        prompt: str,
        priority: str,
        state: str,
        created_by: str | None,
    ) -> None:
        """Insert the task, or update every field but `created_at` if it is already known."""
        fields = {
            "title": redact_secrets(_text("title", title, allow_empty=True)),
            "prompt": redact_secrets(_text("prompt", prompt, allow_empty=True)),
            "priority": _text("priority", priority),
            "state": _text("state", state),
            "created_by": None if created_by is None else _text("created_by", created_by),
        }
        task_id = _text("task_id", task_id)
        now = self._clock()
        with transaction(self._engine) as session:
            _upsert_task(session, task_id, fields, now)

    def set_task_state(self, task_id: str, state: str) -> None:
        """Move a known task to `state`."""
        state = _text("state", state)
        with transaction(self._engine) as session:
            row = _get(session, TaskRow, task_id, "task")
            row.state, row.updated_at = state, self._clock()

    def task(self, task_id: str) -> TaskRecord:
        """The task with this id."""
        with transaction(self._engine, read_only=True) as session:
            return _task_record(_get(session, TaskRow, task_id, "task"))

    # -- attempts ---------------------------------------------------------------------

    def start_attempt(
        self, task_id: str, *, attempt: int, agent: str, log_path: str | os.PathLike[str] | None
    ) -> int:
        """Record that `agent` started attempt number `attempt` (1-based) at a known task."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be an int >= 1, got {attempt!r}")
        agent = _text("agent", agent)
        log = None if log_path is None else os.fspath(log_path)
        with transaction(self._engine) as session:
            _get(session, TaskRow, task_id, "task")
            row = AttemptRow(
                task_id=task_id,
                attempt=attempt,
                agent=agent,
                started_at=self._clock(),
                log_path=log,
            )
            session.add(row)
            session.flush()
            return row.id

    def finish_attempt(
        self,
        attempt_id: int,
        *,
        outcome: AttemptOutcome | str,
        exit_code: int | None,
        reason: str | None = None,
    ) -> None:
        """Close an attempt: its outcome, exit code, reason, and duration by the clock.

        Finishing an attempt again overwrites the earlier ending.
        """
        outcome = _member(AttemptOutcome, "outcome", outcome)
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
        ):
            raise ValueError(f"exit_code must be an int or None, got {exit_code!r}")
        reason = (
            None if reason is None else redact_secrets(_text("reason", reason, allow_empty=True))
        )
        with transaction(self._engine) as session:
            row = _get(session, AttemptRow, attempt_id, "attempt")
            ended = self._clock()
            row.ended_at, row.outcome, row.exit_code, row.reason = ended, outcome, exit_code, reason
            row.duration_s = max(0.0, ended - row.started_at)

    def attempt(self, attempt_id: int) -> AttemptRecord:
        """The attempt with this id."""
        with transaction(self._engine, read_only=True) as session:
            return _attempt_record(_get(session, AttemptRow, attempt_id, "attempt"))

    def record_heartbeat(
        self, attempt_id: int, *, lease_expires_at: float, count: int = 1
    ) -> None:
        """Record `count` lease renewals of a running attempt, the latest setting the lease's
        wall-clock expiry to `lease_expires_at`."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        with transaction(self._engine) as session:
            row = _get(session, AttemptRow, attempt_id, "attempt")
            row.heartbeats = (row.heartbeats or 0) + count
            row.last_heartbeat_at, row.lease_expires_at = self._clock(), float(lease_expires_at)

    def attempts(
        self, task_id: str | None = None, *, limit: int = DEFAULT_LIMIT
    ) -> list[AttemptRecord]:
        """The newest attempts first, optionally only those at one task."""
        query = select(AttemptRow).order_by(AttemptRow.started_at.desc(), AttemptRow.id.desc())
        if task_id is not None:
            query = query.where(AttemptRow.task_id == task_id)
        return self._read(query, limit, _attempt_record)

    # -- modifications ----------------------------------------------------------------

    def record_modification(
        self,
        description: str,
        *,
        files_changed: Sequence[str],
        outcome: ModificationOutcome | str = ModificationOutcome.IN_PROGRESS,
        task_id: str | None = None,
        metric_deltas: Mapping[str, float] | None = None,
        branch: str | None = None,
        commit: str | None = None,
        verdicts: Sequence[Mapping[str, Any]] = (),
    ) -> int:
        """Record a change the fleet made to this system; returns its id.

        `branch` and `commit` say where a gated change lives; `verdicts` are the gate's
        results per command, stored as given (JSON-serialisable mappings).
        """
        description = redact_secrets(_text("description", description))
        files = _paths(files_changed)
        outcome = _member(ModificationOutcome, "outcome", outcome)
        deltas = _deltas(metric_deltas)
        now = self._clock()
        with transaction(self._engine) as session:
            if task_id is not None:
                _get(session, TaskRow, task_id, "task")
            row = ModificationRow(
                description=description,
                task_id=task_id,
                files_changed=files,
                outcome=outcome,
                metric_deltas=deltas,
                created_at=now,
                updated_at=now,
                branch=None if branch is None else _text("branch", branch),
                commit_sha=None if commit is None else _text("commit", commit),
                verdicts=_verdicts(verdicts),
            )
            session.add(row)
            session.flush()
            return row.id

    def set_modification_outcome(
        self,
        mod_id: int,
        outcome: ModificationOutcome | str,
        *,
        metric_deltas: Mapping[str, float] | None = None,
        commit: str | None = None,
    ) -> None:
        """Move a modification to `outcome`; `metric_deltas` and `commit`, when given, replace
        the old ones (a merge records the merge commit)."""
        outcome = _member(ModificationOutcome, "outcome", outcome)
        deltas = None if metric_deltas is None else _deltas(metric_deltas)
        with transaction(self._engine) as session:
            row = _get(session, ModificationRow, mod_id, "modification")
            row.outcome, row.updated_at = outcome, self._clock()
            if deltas is not None:
                row.metric_deltas = deltas
            if commit is not None:
                row.commit_sha = _text("commit", commit)

    def modification(self, mod_id: int) -> ModificationRecord:
        """The modification with this id."""
        with transaction(self._engine, read_only=True) as session:
            return _modification_record(_get(session, ModificationRow, mod_id, "modification"))

    def modifications(
        self, outcome: ModificationOutcome | str | None = None, *, limit: int = DEFAULT_LIMIT
    ) -> list[ModificationRecord]:
        """The newest modifications first, optionally only those with one outcome."""
        query = select(ModificationRow).order_by(
            ModificationRow.created_at.desc(), ModificationRow.id.desc()
        )
        if outcome is not None:
            query = query.where(
                ModificationRow.outcome == _member(ModificationOutcome, "outcome", outcome)
            )
        return self._read(query, limit, _modification_record)

    # -- dead ends --------------------------------------------------------------------

    def record_dead_end(self, description: str, *, module: str, reason: str, evidence: str) -> int:
        """Remember an approach that failed in `module`, so it is not tried again."""
        row = DeadEndRow(
            description=redact_secrets(_text("description", description)),
            module=_text("module", module),
            reason=redact_secrets(_text("reason", reason)),
            evidence=redact_secrets(_text("evidence", evidence, allow_empty=True)),
            created_at=self._clock(),
        )
        with transaction(self._engine) as session:
            session.add(row)
            session.flush()
            return row.id

    def dead_ends(
        self, module: str | None = None, *, limit: int = DEFAULT_LIMIT
    ) -> list[DeadEndRecord]:
        """The newest dead ends first, optionally only those in one module."""
        query = select(DeadEndRow).order_by(DeadEndRow.created_at.desc(), DeadEndRow.id.desc())
        if module is not None:
            query = query.where(DeadEndRow.module == module)
        return self._read(query, limit, _dead_end_record)

    # -- config snapshots -------------------------------------------------------------

    def snapshot_config(self, label: str, values: Mapping[str, Any]) -> int:
        """Store a JSON-serialisable copy of live configuration under `label`; returns its id."""
        label = _text("label", label)
        if not isinstance(values, Mapping):
            raise ValueError(f"values must be a mapping, got {type(values).__name__}")
        try:
            # Round-trip: checks serialisability now, and stores a copy the caller can't mutate.
            stored = json.loads(json.dumps(redact_json(values), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"values must be JSON-serialisable without NaN/inf: {exc}") from exc
        row = ConfigSnapshotRow(label=label, values=stored, created_at=self._clock())
        with transaction(self._engine) as session:
            session.add(row)
            session.flush()
            return row.id

    def config_snapshots(self, limit: int = DEFAULT_LIMIT) -> list[ConfigSnapshotRecord]:
        """The newest configuration snapshots first."""
        query = select(ConfigSnapshotRow).order_by(
            ConfigSnapshotRow.created_at.desc(), ConfigSnapshotRow.id.desc()
        )
        return self._read(query, limit, _snapshot_record)

    def latest_config_snapshot(self) -> ConfigSnapshotRecord | None:
        """The newest configuration snapshot, or None if there is none."""
        newest = self.config_snapshots(limit=1)
        return newest[0] if newest else None

    # -- telemetry --------------------------------------------------------------------

    def record_telemetry(self, taken_at: float, values: Mapping[str, float], *,
                         sources: Sequence[str] = (), keep: int = 10_000) -> int:
        """Store one snapshot's finite values; keep only the newest `keep` rows. Returns its id."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep!r}")
        if not math.isfinite(taken_at):
            raise ValueError(f"taken_at must be finite, got {taken_at!r}")
        stored = {str(k): float(v) for k, v in values.items() if math.isfinite(float(v))}
        row = TelemetryRow(taken_at=float(taken_at), sources=",".join(sources)[:255],
                           values=stored)
        with transaction(self._engine) as session:
            session.add(row)
            session.flush()
            oldest_kept = session.scalar(select(TelemetryRow.id).order_by(
                TelemetryRow.id.desc()).offset(keep - 1).limit(1))
            if oldest_kept is not None:
                session.execute(delete(TelemetryRow).where(TelemetryRow.id < oldest_kept))
            return row.id

    def telemetry(self, limit: int = DEFAULT_LIMIT) -> list[TelemetryRecord]:
        """Stored telemetry snapshots, newest first."""
        query = select(TelemetryRow).order_by(TelemetryRow.taken_at.desc(),
                                              TelemetryRow.id.desc())
        return self._read(query, limit, _telemetry_record)

    # -- learner states ---------------------------------------------------------------

    def save_learner_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Store (replacing any earlier one) the JSON-serialisable state of the learner `name`."""
        name = _text("name", name)
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        try:
            stored = json.loads(json.dumps(redact_json(state), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state must be JSON-serialisable without NaN/inf: {exc}") from exc
        now = self._clock()
        with transaction(self._engine) as session:
            dialect = session.get_bind().dialect.name
            if dialect in ("sqlite", "postgresql"):
                # One statement, so two processes saving the same learner can't both insert.
                insert = sqlite_insert if dialect == "sqlite" else pg_insert
                statement = insert(LearnerStateRow).values(name=name, state=stored, updated_at=now)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[LearnerStateRow.name],
                        set_={"state": stored, "updated_at": now},
                    )
                )
                return
            row = session.get(LearnerStateRow, name, with_for_update=True)
            if row is None:
                session.add(LearnerStateRow(name=name, state=stored, updated_at=now))
            else:
                row.state, row.updated_at = stored, now

    def load_learner_state(self, name: str) -> dict[str, Any] | None:
        """The state last saved for the learner `name` (a fresh copy), or None if none was."""
        name = _text("name", name)
        with transaction(self._engine, read_only=True) as session:
            row = session.get(LearnerStateRow, name)
            return None if row is None else json.loads(json.dumps(row.state))

    # -- helpers ----------------------------------------------------------------------

    def _read(
        self, query: Select[Any], limit: int, to_record: Callable[[Any], _RecordT]
    ) -> list[_RecordT]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        with transaction(self._engine, read_only=True) as session:
            return [to_record(row) for row in session.scalars(query.limit(limit))]


def _upsert_task(session: Session, task_id: str, fields: dict[str, str | None], now: float) -> None:
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        # One statement, so two processes recording the same task can't both insert.
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        statement = insert(TaskRow).values(id=task_id, created_at=now, updated_at=now, **fields)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[TaskRow.id], set_={**fields, "updated_at": now}
            )
        )
        return
    row = session.get(TaskRow, task_id, with_for_update=True)
    if row is None:
        session.add(TaskRow(id=task_id, created_at=now, updated_at=now, **fields))
    else:
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = now
    session.flush()


def _get(session: Session, model: type[_RowT], record_id: object, kind: str) -> _RowT:
    row = session.get(model, record_id)
    if row is None:
        raise UnknownRecord(kind, record_id)
    return row


def _text(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return str(value)  # a StrEnum member becomes its plain value


def _member(enum_cls: type[_EnumT], name: str, value: object) -> _EnumT:
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_cls)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}") from None


def _paths(files_changed: Sequence[str]) -> list[str]:
    if isinstance(files_changed, str) or not isinstance(files_changed, Sequence):
        raise ValueError(f"files_changed must be a sequence of paths, got {files_changed!r}")
    return [os.fspath(path) for path in files_changed]


def _verdicts(verdicts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(verdicts, str | bytes) or not isinstance(verdicts, Sequence):
        raise ValueError(f"verdicts must be a sequence of mappings, got {verdicts!r}")
    out = []
    for verdict in verdicts:
        if not isinstance(verdict, Mapping):
            raise ValueError(f"each verdict must be a mapping, got {verdict!r}")
        out.append({str(k): redact_secrets(v) if isinstance(v, str) else v
                    for k, v in verdict.items()})
    return out


def _deltas(metric_deltas: Mapping[str, float] | None) -> dict[str, float]:
    if metric_deltas is None:
        return {}
    out: dict[str, float] = {}
    for key, value in metric_deltas.items():
        if (
            not isinstance(key, str)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            raise ValueError(f"metric_deltas must map str to numbers, got {key!r}: {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"metric_deltas[{key!r}] must be finite, got {value!r}")
        out[key] = float(value)
    return out


def _task_record(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        task_id=row.id,
        title=row.title,
        prompt=row.prompt,
        priority=row.priority,
        state=row.state,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _attempt_record(row: AttemptRow) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=row.id,
        task_id=row.task_id,
        attempt=row.attempt,
        agent=row.agent,
        started_at=row.started_at,
        ended_at=row.ended_at,
        exit_code=row.exit_code,
        outcome=row.outcome,
        duration_s=row.duration_s,
        log_path=row.log_path,
        reason=row.reason,
        heartbeats=row.heartbeats or 0,
        last_heartbeat_at=row.last_heartbeat_at,
        lease_expires_at=row.lease_expires_at,
    )


def _modification_record(row: ModificationRow) -> ModificationRecord:
    return ModificationRecord(
        mod_id=row.id,
        description=row.description,
        task_id=row.task_id,
        files_changed=tuple(row.files_changed),
        outcome=row.outcome,
        metric_deltas=MappingProxyType(dict(row.metric_deltas)),
        created_at=row.created_at,
        updated_at=row.updated_at,
        branch=row.branch,
        commit=row.commit_sha,
        verdicts=tuple(MappingProxyType(dict(v)) for v in row.verdicts or ()),
    )


def _dead_end_record(row: DeadEndRow) -> DeadEndRecord:
    return DeadEndRecord(
        dead_end_id=row.id,
        description=row.description,
        module=row.module,
        reason=row.reason,
        evidence=row.evidence,
        created_at=row.created_at,
    )


def _telemetry_record(row: TelemetryRow) -> TelemetryRecord:
    return TelemetryRecord(
        telemetry_id=row.id, taken_at=row.taken_at,
        sources=tuple(s for s in row.sources.split(",") if s),
        values=MappingProxyType(dict(row.values)),
    )


def _snapshot_record(row: ConfigSnapshotRow) -> ConfigSnapshotRecord:
    return ConfigSnapshotRecord(
        snapshot_id=row.id,
        label=row.label,
        values=MappingProxyType(dict(row.values)),
        created_at=row.created_at,
    )
