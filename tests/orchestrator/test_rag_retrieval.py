"""RAG: retrieval from a local folder, and pass-through when none is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fakes import ScriptedWorker

from orchestrator import InferenceRequest, Pipeline, PipelineConfig
from orchestrator.retrieval import DocumentIndex


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "lease.md").write_text(
        "# Leases\nA claim holds a lease with a fencing token.\n"
        "When the lease expires another agent may reclaim the task.\n"
    )
    (tmp_path / "breaker.md").write_text(
        "# Breakers\nThe circuit breaker opens after five failures and probes when half-open.\n"
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "cooking.txt").write_text("Boil the pasta in salted water.\n")
    (tmp_path / ".hidden.md").write_text("circuit breaker secrets\n")
    (tmp_path / "image.bin").write_bytes(b"\x00\x01circuit breaker")
    return tmp_path


def test_search_ranks_the_relevant_chunk_first(docs: Path) -> None:
    """The file sharing the rare query terms ranks first; unrelated files do not appear."""
    index = DocumentIndex.build(docs)
    passages = index.search("when does the circuit breaker open?", top_k=3)
    assert passages[0].path == "breaker.md"
    assert "cooking" not in {p.path for p in passages}


def test_hidden_and_binary_files_are_skipped(docs: Path) -> None:
    """Dot files and binary files are not indexed."""
    index = DocumentIndex.build(docs)
    assert {p.path for p in index.search("circuit breaker secrets", top_k=10)} == {"breaker.md"}


def test_long_files_are_chunked_at_line_boundaries(tmp_path: Path) -> None:
    """A file longer than a chunk yields several passages with their line ranges."""
    (tmp_path / "long.txt").write_text("".join(f"line {i} about widgets\n" for i in range(100)))
    index = DocumentIndex.build(tmp_path, chunk_chars=200)
    assert len(index) > 5
    passage = index.search("widgets", top_k=1)[0]
    assert passage.start_line >= 1 and passage.end_line >= passage.start_line


def test_a_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    """Building over a path that is not a directory raises ValueError."""
    with pytest.raises(ValueError, match="rag_folder"):
        DocumentIndex.build(tmp_path / "nope")


async def test_pipeline_puts_retrieved_passages_in_the_system_prompt(docs: Path) -> None:
    """With a rag_folder, the provider receives the top passages, cited, in the system prompt."""
    worker = ScriptedWorker()
    config = PipelineConfig(rag_folder=docs, rag_top_k=1)
    async with Pipeline(config, worker) as pipeline:
        await pipeline.infer(
            InferenceRequest("How does a lease get reclaimed?", system="Be brief.")
        )
    system = worker.requests[0].system
    assert system is not None
    assert system.startswith("Be brief.\n\nContext retrieved from local documents")
    assert "[1] lease.md (lines 1-3)" in system
    assert "breaker" not in system


async def test_without_a_folder_requests_pass_through_untouched() -> None:
    """No rag_folder: no context is added."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        await pipeline.infer(InferenceRequest("How does a lease get reclaimed?"))
    assert worker.requests[0].system is None


async def test_no_matching_passage_adds_nothing(docs: Path) -> None:
    """A query sharing no term with the documents gets no context."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(rag_folder=docs), worker) as pipeline:
        await pipeline.infer(InferenceRequest("zzz qqq"))
    assert worker.requests[0].system is None
