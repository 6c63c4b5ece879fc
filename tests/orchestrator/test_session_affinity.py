"""Session affinity: a session's requests always go to the same inference shard."""

from __future__ import annotations

import subprocess
import sys

from pipeline_fakes import ScriptedWorker

from orchestrator import InferenceRequest, Pipeline, PipelineConfig
from orchestrator.stages.inference import shard_for


def test_shard_is_a_pure_function_of_the_session() -> None:
    """The same session maps to the same shard every time, and sessions spread over shards."""
    shards = {shard_for(f"session-{i}", 4) for i in range(100)}
    assert shards == {0, 1, 2, 3}
    assert all(shard_for("abc", 4) == shard_for("abc", 4) for _ in range(10))


def test_shard_is_the_same_in_another_process() -> None:
    """The hash is not Python's salted hash(): another interpreter agrees."""
    code = "from orchestrator.stages.inference import shard_for; print(shard_for('abc', 7))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == shard_for("abc", 7)


async def test_a_sessions_requests_all_use_its_shard() -> None:
    """Every request of a session passes through the shard `shard_of` names."""
    worker = ScriptedWorker()
    seen: set[int] = set()
    async with Pipeline(PipelineConfig(inference_shards=8), worker) as pipeline:
        original = pipeline.inference.queue_for

        def spy(job):  # type: ignore[no-untyped-def]
            queue = original(job)
            seen.add(job.shard)
            return queue

        pipeline.inference.queue_for = spy  # type: ignore[method-assign]
        for i in range(20):
            await pipeline.infer(InferenceRequest(f"q{i}", session_id="agent-7"))
        expected = pipeline.shard_of(InferenceRequest("x", session_id="agent-7"))
    assert seen == {expected}
