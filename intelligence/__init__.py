"""Learned parts of the system: embeddings, semantic dedup, and (next) routing and feedback.

    from intelligence import SemanticDedup

    dedup = SemanticDedup()          # the packaged all-MiniLM-L6-v2, FAISS, learned verification
    dedup.insert("How do I reverse a list in Python?", answer, scope="tenant-a/conv-1")
    hit = dedup.lookup("What's the way to reverse a Python list?", scope="tenant-a/conv-1")

Importing this package is cheap: each public name loads its module on first access, and the
heavy libraries (torch, sentence-transformers, faiss, scikit-learn) load only on first use.
To export a new name, add it to `_EXPORTS` (name -> module); `__all__` follows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # errors
    "IntelligenceError": "intelligence.errors",
    "EmbedderUnavailable": "intelligence.errors",
    "IndexFileError": "intelligence.errors",
    # embeddings
    "Embedder": "intelligence.embed",
    "EmbedderKind": "intelligence.embed",
    "TransformerEmbedder": "intelligence.embed",
    "LexicalEmbedder": "intelligence.embed",
    "DefaultEmbedder": "intelligence.embed",
    # semantic dedup
    "SemanticDedup": "intelligence.dedup",
    "Hit": "intelligence.dedup",
    "DedupStats": "intelligence.dedup",
    "PairVerifier": "intelligence.verify",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; `X as X` marks a re-export
    from intelligence.dedup import DedupStats as DedupStats
    from intelligence.dedup import Hit as Hit
    from intelligence.dedup import SemanticDedup as SemanticDedup
    from intelligence.embed import DefaultEmbedder as DefaultEmbedder
    from intelligence.embed import Embedder as Embedder
    from intelligence.embed import EmbedderKind as EmbedderKind
    from intelligence.embed import LexicalEmbedder as LexicalEmbedder
    from intelligence.embed import TransformerEmbedder as TransformerEmbedder
    from intelligence.errors import EmbedderUnavailable as EmbedderUnavailable
    from intelligence.errors import IndexFileError as IndexFileError
    from intelligence.errors import IntelligenceError as IntelligenceError
    from intelligence.verify import PairVerifier as PairVerifier


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'intelligence' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
