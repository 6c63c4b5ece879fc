"""Retrieval over a local folder of documents: TF-IDF over line-aligned chunks of each file."""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DocumentIndex", "Passage"]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+|[0-9]{2,}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "him",
        "his",
        "how",
        "its",
        "may",
        "new",
        "now",
        "old",
        "see",
        "two",
        "way",
        "who",
        "did",
        "get",
        "let",
        "put",
        "say",
        "she",
        "too",
        "use",
        "that",
        "with",
        "have",
        "this",
        "will",
        "your",
        "from",
        "they",
        "been",
        "than",
        "them",
        "then",
        "what",
        "when",
        "where",
        "which",
        "while",
        "into",
        "also",
        "does",
        "each",
        "just",
        "only",
        "over",
        "such",
        "some",
        "very",
        "these",
        "those",
        "there",
        "their",
        "about",
        "would",
        "could",
        "should",
        "self",
        "return",
        "import",
    ]
)


def _terms(text: str) -> list[str]:
    terms = []
    for word in _WORD.findall(text):
        lowered = word.lower()
        if lowered not in _STOP:
            terms.append(lowered)
        if word != lowered and not word.isupper():  # camelCase also indexes its parts
            terms.extend(p.lower() for p in _CAMEL.split(word) if len(p) > 2 and p != word)
    return terms


@dataclass(frozen=True, slots=True, kw_only=True)
class Passage:
    """A retrieved chunk: where it comes from (path relative to the folder, 1-based lines)."""

    path: str
    start_line: int
    end_line: int
    text: str
    score: float


class DocumentIndex:
    """Cosine similarity between TF-IDF vectors (sublinear tf, smoothed idf) of a query and
    of chunks of at most about `chunk_chars` characters cut at line boundaries.

    Hidden files and folders, binary files and files over `max_file_bytes` are skipped.
    """

    __slots__ = ("_chunks", "_postings", "folder")

    def __init__(self, folder: Path, chunks: list[tuple[str, int, int, str]]) -> None:
        self.folder = folder
        self._chunks = chunks
        counts = [Counter(_terms(text)) for _, _, _, text in chunks]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        n = len(chunks)
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for chunk_id, c in enumerate(counts):
            weights = {
                t: (1 + math.log(k)) * (math.log((n + 1) / (df[t] + 1)) + 1) for t, k in c.items()
            }
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for term, w in weights.items():
                self._postings.setdefault(term, []).append((chunk_id, w / norm))

    def __len__(self) -> int:
        return len(self._chunks)

    @classmethod
    def build(
        cls, folder: Path, *, chunk_chars: int = 1200, max_file_bytes: int = 1_000_000
    ) -> DocumentIndex:
        """Index every readable text file under `folder`.

        Raises ValueError if `folder` is not a directory.
        """
        if not folder.is_dir():
            raise ValueError(f"rag_folder {str(folder)!r} is not a directory")
        chunks: list[tuple[str, int, int, str]] = []
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            if path.stat().st_size > max_file_bytes:
                continue
            raw = path.read_bytes()
            if b"\x00" in raw[:4096]:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            chunks.extend(_chunk(rel.as_posix(), text, chunk_chars))
        return cls(folder, chunks)

    def search(self, query: str, *, top_k: int = 3) -> list[Passage]:
        """The `top_k` chunks most similar to `query`, best first; only those sharing a term."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        n = len(self._chunks)
        scores: dict[int, float] = {}
        for term, k in Counter(_terms(query)).items():
            postings = self._postings.get(term)
            if not postings:
                continue
            q = (1 + math.log(k)) * (math.log((n + 1) / (len(postings) + 1)) + 1)
            for chunk_id, w in postings:
                scores[chunk_id] = scores.get(chunk_id, 0.0) + q * w
        best = heapq.nlargest(top_k, scores.items(), key=lambda item: (item[1], -item[0]))
        return [
            Passage(path=p, start_line=a, end_line=b, text=t, score=s)
            for (p, a, b, t), s in ((self._chunks[i], s) for i, s in best)
        ]


def _chunk(path: str, text: str, chunk_chars: int) -> list[tuple[str, int, int, str]]:
    chunks = []
    lines = text.splitlines()
    start, size, buf = 0, 0, []
    for number, line in enumerate(lines):
        if buf and size + len(line) + 1 > chunk_chars:
            chunks.append((path, start + 1, number, "\n".join(buf)))
            start, size, buf = number, 0, []
        buf.append(line[:chunk_chars])
        size += len(buf[-1]) + 1
    if buf and any(line.strip() for line in buf):
        chunks.append((path, start + 1, len(lines), "\n".join(buf)))
    return [c for c in chunks if c[3].strip()]
