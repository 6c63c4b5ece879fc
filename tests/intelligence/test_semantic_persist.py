"""`SemanticDedupHook` with a file: answered entries (scope, answer, TTLs) survive a new hook on
the same path; flights in the air and expired answers are not kept; a corrupt or mismatched
file is reported naming it, moved aside, and the index starts empty. The bridge saves them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fakeclock import FakeClock

from intelligence.bridge import IntelligenceBridge
from intelligence.dedup import SemanticDedup
from intelligence.embed import LexicalEmbedder
from intelligence.semantic_hook import SemanticDedupHook
from orchestrator.settings import load_settings

QUESTION = "What is the capital of France?"
ASKED_AGAIN = "what is the capital of   france?"  # the same prompt modulo case and spaces


def hook_on(
    path: Path, clock: FakeClock, embedder: LexicalEmbedder | None = None
) -> SemanticDedupHook:
    dedup = SemanticDedup(embedder or LexicalEmbedder(), verify=False, path=path, clock=clock)
    hook = SemanticDedupHook(dedup, clock=clock)
    assert hook.wait_ready(60), hook.status()
    return hook


async def answer(
    hook: SemanticDedupHook, key: str, text: str, scope: str, value: str, ttl_s: float
) -> None:
    """What the pipeline does for a flight no match served: look up, index, answer, land."""
    assert await hook.match(text, scope) is None
    hook.started(key, text, scope)
    hook.answered(key, value, ttl_s)
    hook.finished(key)


async def test_answered_entries_come_back_with_their_scope_and_ttl(tmp_path: Path) -> None:
    path = tmp_path / "semantic.idx"
    clock = FakeClock()
    first = hook_on(path, clock)
    await answer(first, "k1", QUESTION, "tenant-a", "Paris", ttl_s=300)
    await answer(first, "k2", "How long is the Nile?", "tenant-a", "6650 km", ttl_s=10)
    # a flight still in the air when the process goes: its flight ends with it
    assert await first.match("Is the sky blue?", "tenant-a") is None
    first.started("k3", "Is the sky blue?", "tenant-a")
    assert first.changes_total == 2
    clock.advance(20)  # the Nile's answer has expired
    await asyncio.to_thread(first.save)
    assert first.saved_entries == 1 and path.exists()
    assert first.status()["saved_entries"] == 1 and first.status()["path"] == str(path)

    second = hook_on(path, clock)
    assert second.status()["entries"] == 1 and "load_problem" not in second.status()
    hit = await second.match(ASKED_AGAIN, "tenant-a")
    assert hit is not None and hit.answer == "Paris" and hit.flight_key is None
    assert await second.match(ASKED_AGAIN, "tenant-b") is None  # another scope never
    assert await second.match("is the sky blue?", "tenant-a") is None  # was in the air
    clock.advance(281)  # past the answer's own TTL (300 s from when it was answered)
    assert await second.match(ASKED_AGAIN, "tenant-a") is None


async def test_a_hook_that_never_loaded_does_not_overwrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "semantic.idx"
    clock = FakeClock()
    first = hook_on(path, clock)
    await answer(first, "k1", QUESTION, "s", "Paris", ttl_s=300)
    first.save()
    before = path.read_bytes()
    idle = SemanticDedupHook(SemanticDedup(LexicalEmbedder(), verify=False, path=path))
    idle.save()  # not loaded yet: nothing read, nothing written
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["corrupt", "other embedder"])
async def test_a_bad_file_is_reported_moved_aside_and_the_index_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    path = tmp_path / "semantic.idx"
    clock = FakeClock()
    if kind == "corrupt":
        path.write_bytes(b"not a pickle at all")
    else:
        other = hook_on(path, clock, LexicalEmbedder(dim=64))
        await answer(other, "k1", QUESTION, "s", "Paris", ttl_s=300)
        other.save()
    bad = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="intelligence"):
        hook = hook_on(path, clock)
    status = hook.status()
    assert status["state"] == "ready" and status["entries"] == 0
    assert str(path) in status["load_problem"]
    assert any(str(path) in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
    assert not path.exists()
    assert path.with_name("semantic.idx.rejected").read_bytes() == bad
    await answer(hook, "k2", QUESTION, "s", "Paris", ttl_s=300)  # it serves and saves anew
    hook.save()
    again = hook_on(path, clock)
    assert (await again.match(ASKED_AGAIN, "s")) is not None


async def test_the_bridge_saves_the_entries_with_the_router_state(tmp_path: Path) -> None:
    path = tmp_path / "semantic.idx"
    clock = FakeClock()
    hook = hook_on(path, clock)
    bridge = IntelligenceBridge(["echo"], dedup_hook=hook, save_interval_s=5.0, clock=clock)
    assert bridge.dedup_checkpointer is not None
    await answer(hook, "k1", QUESTION, "s", "Paris", ttl_s=300)
    assert not bridge.dedup_checkpointer.due()
    clock.advance(5)
    assert bridge.dedup_checkpointer.due()
    bridge.save()
    assert hook.saved_entries == 1 and not bridge.dedup_checkpointer.due()
    memory_only = IntelligenceBridge(["echo"], learned_routing=False)
    assert memory_only.dedup_checkpointer is None
    built = IntelligenceBridge(["echo"], semantic_dedup_path=path)
    assert built.dedup_hook is not None and built.dedup_hook.path == path


def test_the_setting_is_read_from_the_environment() -> None:
    settings = load_settings(
        environ={"PROVIDER": "echo", "SEMANTIC_DEDUP_PATH": "/var/lib/o/semantic.idx"},
        env_file=None,
    )
    assert settings.semantic_dedup_path == "/var/lib/o/semantic.idx"
    assert load_settings(environ={"PROVIDER": "echo"}, env_file=None).semantic_dedup_path is None
