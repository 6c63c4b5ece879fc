"""Embeddings: the packaged MiniLM, the lexical fallback, and the choice between them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import intelligence
from intelligence.embed import (
    DIM,
    DefaultEmbedder,
    Embedder,
    EmbedderKind,
    LexicalEmbedder,
    TransformerEmbedder,
)
from intelligence.errors import EmbedderUnavailable


def test_public_names_are_the_curated_set() -> None:
    """The package exports exactly the names we mean to (errors and embedders so far)."""
    assert {
        "DefaultEmbedder",
        "Embedder",
        "EmbedderKind",
        "EmbedderUnavailable",
        "IndexFileError",
        "IntelligenceError",
        "LexicalEmbedder",
        "TransformerEmbedder",
    } <= set(intelligence.__all__)
    for name in intelligence.__all__:
        assert getattr(intelligence, name) is not None


def test_importing_the_package_loads_no_heavy_library() -> None:
    """`import intelligence` (and touching an embedder class) imports neither torch nor sklearn."""
    code = (
        "import sys, intelligence; intelligence.DefaultEmbedder; intelligence.LexicalEmbedder;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'sklearn', 'faiss', 'scipy')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_minilm_rows_are_unit_length_384d_float32(minilm: TransformerEmbedder) -> None:
    """The packaged model gives normalised 384-d float32 rows, one per text, in order."""
    rows = minilm.embed(["How do I reverse a list in Python?", "Bake a sourdough loaf."])
    assert rows.shape == (2, DIM)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_minilm_places_a_paraphrase_nearer_than_an_unrelated_text(
    minilm: TransformerEmbedder,
) -> None:
    """A paraphrase is closer in cosine than a different topic (the model means something)."""
    a, para, other = minilm.embed(
        [
            "How do I reverse a list in Python?",
            "What's the way to reverse a Python list?",
            "What is the capital of Australia?",
        ]
    )
    assert float(a @ para) > 0.8 > float(a @ other)


def test_minilm_batches_give_the_same_rows_as_single_calls(minilm: TransformerEmbedder) -> None:
    """Embedding in one batch equals embedding one text at a time."""
    texts = ["first prompt", "a second, longer prompt about databases", "third"]
    batch = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_embed_refuses_a_bare_string(minilm: TransformerEmbedder) -> None:
    """Passing one str (a sequence of characters) is a TypeError, not 30 embeddings."""
    with pytest.raises(TypeError):
        minilm.embed("one prompt")  # type: ignore[arg-type]


def test_embedders_satisfy_the_protocol(minilm: TransformerEmbedder) -> None:
    """Every implementation is an `Embedder`."""
    for embedder in (minilm, LexicalEmbedder(), DefaultEmbedder(minilm)):
        assert isinstance(embedder, Embedder)


def test_lexical_rows_are_normalised_and_deterministic() -> None:
    """The hashing embedder is unit-length, 384-d and gives the same rows every time."""
    texts = ["reverse a list", "reverse the list", "bake bread"]
    rows = LexicalEmbedder().embed(texts)
    assert rows.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(rows, LexicalEmbedder().embed(texts))
    assert float(rows[0] @ rows[1]) > float(rows[0] @ rows[2])


def test_lexical_embeds_empty_text_as_a_zero_row() -> None:
    """An empty text has no n-grams: a zero row, not NaN."""
    rows = LexicalEmbedder().embed([""])
    assert not np.isnan(rows).any()
    assert float(np.abs(rows).sum()) == 0.0


def test_lexical_rejects_a_bad_ngram_range() -> None:
    """A reversed n-gram range is a ValueError naming the parameter."""
    with pytest.raises(ValueError, match="ngram_range"):
        LexicalEmbedder(ngram_range=(4, 2))


def test_default_uses_the_transformer_when_it_loads(minilm: TransformerEmbedder) -> None:
    """With sentence-transformers importable, the default embedder reports the transformer."""
    embedder = DefaultEmbedder(minilm)
    assert embedder.kind is EmbedderKind.TRANSFORMER
    assert embedder.fallback_reason is None


def test_default_falls_back_to_lexical_when_the_model_cannot_load(tmp_path) -> None:
    """A model that cannot load hands over to the lexical embedder, and `kind` says so."""
    embedder = DefaultEmbedder(TransformerEmbedder(str(tmp_path / "no-such-model")))
    assert not embedder.loaded
    rows = embedder.embed(["still answers"])
    assert embedder.kind is EmbedderKind.LEXICAL
    assert rows.shape == (1, DIM)
    assert "no-such-model" in (embedder.fallback_reason or "")


def test_default_falls_back_when_sentence_transformers_cannot_be_imported() -> None:
    """With sentence-transformers unimportable (a broken install), the lexical embedder serves."""
    code = (
        "import sys; sys.modules['sentence_transformers'] = None\n"
        "from intelligence import DefaultEmbedder\n"
        "e = DefaultEmbedder(); rows = e.embed(['x']); print(e.kind, rows.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lexical (1, 384)"


def test_transformer_load_failure_is_embedder_unavailable(tmp_path) -> None:
    """Loading from a missing path raises EmbedderUnavailable naming the path."""
    with pytest.raises(EmbedderUnavailable, match="no-such-model"):
        TransformerEmbedder(str(tmp_path / "no-such-model")).load()
