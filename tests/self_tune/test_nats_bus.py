"""`NatsBus` against the real NATS server on 127.0.0.1:4222: snapshots cross buses and
processes equal, a full subscriber drops its oldest, a bad message is counted, an unreachable
server costs the publisher nothing, and `orchestrator serve --self-tune --telemetry-nats`
publishes what its tuning loop samples. Every test has its own subject (a uuid)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import ends_within
from served import free_port, wait_until_serving

from coordinator.errors import ConfigError
from coordinator.settings import load_settings
from self_tune.nats_bus import NatsBus, mask_url
from self_tune.service import SelfTuning
from self_tune.telemetry import InProcessBus, TelemetrySnapshot

REPO = Path(__file__).resolve().parents[2]
NATS_URL = "nats://127.0.0.1:4222"
WAIT_S = 20.0


def _nats_listens() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


needs_nats = pytest.mark.skipif(
    not _nats_listens(), reason="no NATS server listens on 127.0.0.1:4222 (start nats-server)"
)


@pytest.fixture
def subject() -> str:
    return f"test.telemetry.{uuid.uuid4().hex}"


@pytest.fixture
def buses() -> Iterator[list[NatsBus]]:
    made: list[NatsBus] = []
    yield made
    for bus in made:
        bus.close()


def _bus(buses: list[NatsBus], subject: str, url: str = NATS_URL, **kw: int) -> NatsBus:
    bus = NatsBus(url, subject, **kw)
    buses.append(bus)
    return bus


def _snapshot(i: int = 0) -> TelemetrySnapshot:
    return TelemetrySnapshot(
        taken_at=1_700_000_000.25 + i,
        values={"latency_p95_ms": 12.5 + i, "fleet.backlog": 3.0},
        sources=("pipeline", "fleet"),
    )


def _receive(sub, count: int) -> list[TelemetrySnapshot]:  # type: ignore[no-untyped-def]
    got: list[TelemetrySnapshot] = []
    while len(got) < count:
        assert sub.wait(WAIT_S), f"only {len(got)} of {count} snapshots arrived"
        got += sub.drain()
    return got


def _publish_raw(subject: str, *payloads: bytes) -> None:
    import nats

    async def send() -> None:
        nc = await nats.connect(NATS_URL)
        for data in payloads:
            await nc.publish(subject, data)
        await nc.drain()

    asyncio.run(send())


@needs_nats
def test_a_snapshot_published_on_one_bus_arrives_equal_on_another(
    subject: str, buses: list[NatsBus]
) -> None:
    publisher, listener = _bus(buses, subject), _bus(buses, subject)
    sub = listener.subscribe()
    assert listener.wait_ready(WAIT_S)
    publisher.publish(_snapshot())
    assert _receive(sub, 1) == [_snapshot()]
    publisher.close()
    assert (publisher.published, publisher.dropped) == (1, 0)
    assert listener.bad_messages == 0


@needs_nats
def test_a_snapshot_published_by_another_process_arrives(
    subject: str, buses: list[NatsBus]
) -> None:
    listener = _bus(buses, subject)
    sub = listener.subscribe()
    assert listener.wait_ready(WAIT_S)
    code = (
        "import sys\n"
        "from self_tune.nats_bus import NatsBus\n"
        "from self_tune.telemetry import TelemetrySnapshot\n"
        f"bus = NatsBus({NATS_URL!r}, {subject!r})\n"
        "bus.publish(TelemetrySnapshot(taken_at=1.5, values={'x': 2.0}, sources=('other',)))\n"
        "bus.close()\n"  # drains: the snapshot reaches the server before the process ends
        "sys.exit(0 if (bus.published, bus.dropped) == (1, 0) else 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _receive(sub, 1) == [
        TelemetrySnapshot(taken_at=1.5, values={"x": 2.0}, sources=("other",))
    ]


@needs_nats
def test_a_full_subscriber_drops_its_oldest_and_counts_them(
    subject: str, buses: list[NatsBus]
) -> None:
    publisher, listener = _bus(buses, subject), _bus(buses, subject)
    small = listener.subscribe(maxlen=2)
    everything = listener.subscribe(maxlen=100)  # fed after `small`: when it has all, so has small
    assert listener.wait_ready(WAIT_S)
    for i in range(5):
        publisher.publish(_snapshot(i))
    assert _receive(everything, 5) == [_snapshot(i) for i in range(5)]
    assert small.dropped == 3
    assert small.drain() == [_snapshot(3), _snapshot(4)]
    small.close()
    everything.close()


@needs_nats
def test_a_message_that_is_not_a_snapshot_is_counted_and_logged_once(
    subject: str, buses: list[NatsBus], caplog: pytest.LogCaptureFixture
) -> None:
    listener = _bus(buses, subject)
    sub = listener.subscribe()
    assert listener.wait_ready(WAIT_S)
    good = _snapshot()
    import json

    with caplog.at_level(logging.WARNING, logger="self_tune.nats_bus"):
        # one connection keeps the order: both bad ones arrive before the good one
        _publish_raw(
            subject,
            b"not json",
            b'{"taken_at": "soon", "values": {}}',
            json.dumps(good.to_dict()).encode(),
        )
        assert _receive(sub, 1) == [good]
    assert listener.bad_messages == 2
    warned = [r for r in caplog.records if "not a telemetry snapshot" in r.getMessage()]
    assert len(warned) == 1 and subject in warned[0].getMessage()


def test_publishing_to_an_unreachable_server_returns_at_once_and_counts_drops(
    subject: str, buses: list[NatsBus], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"nats://telemetry:s3cret-pw@127.0.0.1:{free_port()}"
    logged = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.set()

    seen = Seen(level=logging.WARNING)
    logging.getLogger("self_tune.nats_bus").addHandler(seen)
    try:
        with caplog.at_level(logging.INFO, logger="self_tune.nats_bus"):
            bus = _bus(buses, subject, url, queue_max=4)
            started = time.monotonic()
            for i in range(20):
                bus.publish(_snapshot(i))
            assert time.monotonic() - started < 0.5  # no connecting, no waiting, no raising
            assert (bus.published, bus.dropped, bus.pending) == (0, 16, 4)
            assert logged.wait(WAIT_S)  # the client said it cannot connect
            bus.close()
    finally:
        logging.getLogger("self_tune.nats_bus").removeHandler(seen)
    assert bus.dropped == 20 and not bus.connected
    assert "s3cret-pw" not in caplog.text and "telemetry:***@" in caplog.text
    assert "s3cret-pw" not in str(bus.status()) and bus.status()["url"].startswith(
        "nats://telemetry:***@127.0.0.1:"
    )


def test_serve_refuses_nats_flags_it_cannot_use(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "SEMANTIC_DEDUP": "0"}
    for argv, said in (
        (["--telemetry-nats", NATS_URL], "needs --self-tune"),
        (["--self-tune", "--telemetry-nats-subject", "a.b"], "needs --telemetry-nats URL"),
        (
            ["--self-tune", "--telemetry-nats", NATS_URL, "--telemetry-nats-subject", "a.>"],
            "wildcards",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--provider", "echo", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and said in done.stderr, done.stderr


def test_urls_are_masked() -> None:
    assert mask_url("nats://u:p@h:4222") == "nats://u:***@h:4222"
    assert mask_url("nats://tok3n@h:4222") == "nats://***@h:4222"
    assert mask_url("nats://h:4222,nats://a:b@g:1") == "nats://h:4222,nats://a:***@g:1"
    assert mask_url("nats://h:4222") == "nats://h:4222"


def test_snapshots_round_trip_through_their_dict_and_refuse_what_is_not_one() -> None:
    import json

    snap = _snapshot()
    assert TelemetrySnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    for bad in (
        [],
        {"values": {}},
        {"taken_at": 1, "values": {"x": "y"}},
        {"taken_at": True, "values": {}},
        {"taken_at": 1, "values": {}, "sources": 3},
    ):
        with pytest.raises(ValueError):
            TelemetrySnapshot.from_dict(bad)


def test_the_nats_client_is_imported_only_when_a_nats_bus_is_made() -> None:
    code = (
        "import sys, orchestrator.cli, orchestrator.server.runner, coordinator.cli, "
        "self_tune.service, self_tune.nats_bus\n"
        "assert 'nats' not in sys.modules, 'nats imported at start-up'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@needs_nats
def test_self_tuning_mirrors_its_snapshots_and_still_consumes_them(
    subject: str, buses: list[NatsBus]
) -> None:
    listener = _bus(buses, subject)
    sub = listener.subscribe()
    assert listener.wait_ready(WAIT_S)

    class Source:
        name = "fake"

        def read(self) -> dict[str, float]:
            return {"latency_p95_ms": 7.0}

    tuning = SelfTuning([Source()], telemetry_nats=NATS_URL, telemetry_nats_subject=subject)
    try:
        assert isinstance(tuning.bus, InProcessBus)
        tuning.tick()
        assert tuning.last_snapshot is not None  # consumed in process as before
        (arrived,) = _receive(sub, 1)
        assert arrived == tuning.last_snapshot
    finally:
        tuning.stop()
    bus_status = tuning.status()["telemetry_bus"]
    assert bus_status["published"] == 1
    assert bus_status["nats"]["subject"] == subject
    assert (bus_status["nats"]["published"], bus_status["nats"]["dropped"]) == (1, 0)


def test_the_coordinator_reads_telemetry_nats_from_its_config(tmp_path: Path) -> None:
    from coordinator.self_improve import with_flags

    path = tmp_path / "coordinator.toml"
    path.write_text(
        '[self_improve]\ntelemetry_nats = "nats://127.0.0.1:4222"\n'
        'telemetry_nats_subject = "fleet.telemetry"\n'
    )
    loop = load_settings({}, environ={}, config_path=path).self_improve_settings()
    assert (loop.telemetry_nats, loop.telemetry_nats_subject) == (NATS_URL, "fleet.telemetry")
    flagged = with_flags(loop, telemetry_nats="nats://10.0.0.1:4222", telemetry_nats_subject=None)
    assert (flagged.telemetry_nats, flagged.telemetry_nats_subject) == (
        "nats://10.0.0.1:4222",
        "fleet.telemetry",
    )
    path.write_text('[self_improve]\ntelemetry_nats_subject = "fleet.*"\n')
    with pytest.raises(ConfigError, match="wildcards"):
        load_settings({}, environ={}, config_path=path).self_improve_settings()
    path.write_text("[self_improve]\ntelemetry_nats = 4222\n")
    with pytest.raises(ConfigError, match="telemetry_nats"):
        load_settings({}, environ={}, config_path=path).self_improve_settings()


@needs_nats
def test_orchestrator_serve_publishes_its_telemetry_to_nats(
    subject: str, buses: list[NatsBus], tmp_path: Path
) -> None:
    listener = _bus(buses, subject)
    sub = listener.subscribe()
    assert listener.wait_ready(WAIT_S)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "LOG_LEVEL": "WARNING",
        "SEMANTIC_DEDUP": "0",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "serve",
            "--provider",
            "echo",
            "--port",
            str(port),
            "--self-tune",
            "--telemetry-interval-s",
            "0.2",
            "--telemetry-nats",
            NATS_URL,
            "--telemetry-nats-subject",
            subject,
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        got = _receive(sub, 3)
        assert all("pipeline" in s.sources for s in got)
        assert [s.taken_at for s in got] == sorted(s.taken_at for s in got)
        status = httpx.get(url + "/v1/status", timeout=10).json()["self_tune"]["telemetry_bus"]
        assert status["nats"]["subject"] == subject and status["nats"]["url"] == NATS_URL
        assert status["nats"]["published"] >= 3 and status["nats"]["dropped"] == 0
        process.terminate()
        assert ends_within(process.pid)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert listener.bad_messages == 0
