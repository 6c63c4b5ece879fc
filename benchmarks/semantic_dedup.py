"""Benchmark semantic dedup on the held-out labelled pairs, against GPTCache, in the same run.

    .venv/bin/python benchmarks/semantic_dedup.py [--short] [--entries N]

1. Accuracy on the pairs the verifier never trained on (the `test` split of
   intelligence/data/pairs.jsonl): store the first prompt of each pair in its own scope, look
   the second up. Hit rate = paraphrases served; false-merge rate = hard negatives served
   (the "same follow-up in another conversation" pairs are looked up in the other
   conversation's scope). Also on every pair the held-out labels imply (two paraphrases of
   one base match; a paraphrase and a negative, or two negatives, do not), as traffic compares
   every prompt with every stored one, not only with the base. Side by side, with the same
   all-MiniLM-L6-v2 embeddings: cosine alone at 0.95 (no verification), and GPTCache (its
   FAISS store, SearchDistanceEvaluation) at its documented similarity thresholds (0.8 is its
   default, 0.6 its docs' example).
   GPTCache keys only the last message, so it gets no scope.
2. Speed: lookup p50 with N stored entries (default 100,000; the embedding excluded) against
   a brute-force numpy scan of the same vectors; embedding p50 for one prompt, and per prompt
   in batches of 32.
3. Fleet replay: 24 simulated agents whose prompts overlap exactly, as paraphrases and as
   hard negatives, through a cache in front of a fake upstream: collapse rate
   (1 - upstream calls / requests) and wrong answers served, against an exact-match cache.

GPTCache is optional (`pip install -e '.[bench]'`); without it the benchmark says so and
still prints its own figures (the GPTCache keys are then null).
The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Run as a script, Python puts benchmarks/ first on the path, where benchmarks/http.py would
# shadow the standard library's http (which huggingface_hub imports): put the repository there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from intelligence.dedup import SemanticDedup  # noqa: E402
from intelligence.embed import Embedder, TransformerEmbedder  # noqa: E402
from intelligence.verify import LabelledPair, implied_pairs, load_pairs  # noqa: E402

GPTCACHE_THRESHOLDS = (0.8, 0.6, 0.9, 0.95)  # 0.8 first: the default, used for the headline
AGENTS = 24
BAR = 0.8  # the verified match probability a hit needs: the server's default bar


def _scopes(pair: LabelledPair) -> tuple[object, object]:
    if pair.kind == "conversation":
        return ("conv", pair.id, pair.context_a), ("conv", pair.id, pair.context_b)
    return ("pair", pair.id), ("pair", pair.id)


def _rates(pairs: Sequence[LabelledPair], served: Sequence[bool]) -> tuple[float, float]:
    pos = [s for p, s in zip(pairs, served, strict=True) if p.match]
    neg = [s for p, s in zip(pairs, served, strict=True) if not p.match]
    return sum(pos) / max(len(pos), 1), sum(neg) / max(len(neg), 1)


def run_ours(
    pairs: Sequence[LabelledPair],
    vectors: dict[str, np.ndarray],
    embedder: Embedder,
    *,
    verify: bool,
    threshold: float,
) -> list[bool]:
    dedup: SemanticDedup[int] = SemanticDedup(embedder, verify=verify, threshold=threshold)
    served = []
    for pair in pairs:
        scope_a, scope_b = _scopes(pair)
        dedup.insert(pair.a, pair.id, scope=scope_a, vector=vectors[pair.a])
        hit = dedup.lookup(pair.b, scope=scope_b, vector=vectors[pair.b])
        served.append(hit is not None and hit.value == pair.id)
    return served


def gptcache_available() -> str | None:
    """None when GPTCache imports; else why not."""
    try:
        import gptcache  # noqa: F401
        from gptcache.manager import get_data_manager  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_gptcache(
    pairs: Sequence[LabelledPair], vectors: dict[str, np.ndarray], threshold: float, workdir: Path
) -> list[bool]:
    """Each pair in a fresh GPTCache (its sqlite + FAISS store); put a, get b."""
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    served = []
    for pair in pairs:
        folder = workdir / f"g{threshold}-{pair.id}"
        folder.mkdir(parents=True)
        cache = Cache()
        cache.init(
            pre_embedding_func=get_prompt,  # put()/get() pass the prompt, not chat messages
            embedding_func=lambda text, **_: vectors[text],
            data_manager=get_data_manager(
                CacheBase("sqlite", sql_url=f"sqlite:///{folder}/cache.db"),
                VectorBase("faiss", dimension=384, index_path=str(folder / "faiss.index")),
            ),
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=threshold),
        )
        put(pair.a, f"answer-{pair.id}", cache_obj=cache)
        served.append(get(pair.b, cache_obj=cache) == f"answer-{pair.id}")
    return served


def lookup_speed(
    embedder: Embedder,
    pairs: Sequence[LabelledPair],
    vectors: dict[str, np.ndarray],
    entries: int,
    seed: int,
) -> tuple[float, float]:
    """p50 µs of a lookup among `entries` stored prompts, and of a brute-force numpy scan."""
    rng = np.random.default_rng(seed)
    filler = rng.standard_normal((entries, embedder.dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    dedup: SemanticDedup[int] = SemanticDedup(embedder, max_entries=entries + len(pairs) + 1)
    scope = "bench"
    for i, row in enumerate(filler):
        dedup.insert(f"filler prompt {i}", i, scope=scope, vector=row)
    stored = [p for p in pairs if p.kind != "conversation"]
    for p in stored:  # real neighbours, so lookups verify real candidates
        dedup.insert(p.a, -p.id, scope=scope, vector=vectors[p.a])
    matrix = np.vstack([filler, *[vectors[p.a][None, :] for p in stored]])
    ours, brute = [], []
    for _ in range(3):
        for p in stored:
            v = vectors[p.b]
            t0 = time.perf_counter_ns()
            dedup.lookup(p.b, scope=scope, vector=v)
            ours.append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            scores = matrix @ v
            np.argpartition(scores, -8)[-8:]
            brute.append(time.perf_counter_ns() - t0)
    return statistics.median(ours) / 1000, statistics.median(brute) / 1000


def embedding_speed(embedder: Embedder, texts: Sequence[str], rounds: int) -> tuple[float, float]:
    """p50 ms to embed one prompt; p50 ms per prompt in batches of 32."""
    single, batched = [], []
    for i in range(rounds):
        t0 = time.perf_counter()
        embedder.embed([texts[i % len(texts)]])
        single.append(time.perf_counter() - t0)
    for start in range(0, min(len(texts), 32 * rounds), 32):
        batch = list(texts[start : start + 32])
        t0 = time.perf_counter()
        embedder.embed(batch)
        batched.append((time.perf_counter() - t0) / len(batch))
    return statistics.median(single) * 1000, statistics.median(batched) * 1000


def fleet_workload(
    pairs: Sequence[LabelledPair], per_agent: int, seed: int
) -> list[tuple[int, str, tuple[object, ...]]]:
    """(agent, prompt, answer id) in arrival order: exact repeats, paraphrases, hard negatives.

    A paraphrase shares its base prompt's answer; each hard negative has an answer of its own.
    """
    rng = random.Random(seed)
    groups: dict[int, dict[str, list[str]]] = {}
    for p in pairs:
        if p.kind == "conversation":
            continue
        g = groups.setdefault(p.group, {"base": [p.a], "para": [], "neg": []})
        (g["para"] if p.match else g["neg"]).append(p.b)
    ids = sorted(groups)
    # Popular tasks are shared by many agents: a skewed choice of group.
    weights = [1.0 / (rank + 1) for rank in range(len(ids))]
    rng.shuffle(ids)
    out = []
    for agent in range(AGENTS):
        for _ in range(per_agent):
            gid = rng.choices(ids, weights)[0]
            g = groups[gid]
            roll = rng.random()
            if roll < 0.5 or not (g["para"] or g["neg"]):
                out.append((agent, g["base"][0], ("base", gid)))
            elif roll < 0.8 and g["para"]:
                out.append((agent, rng.choice(g["para"]), ("base", gid)))
            elif g["neg"]:
                text = rng.choice(g["neg"])
                out.append((agent, text, ("neg", gid, text)))
            else:
                out.append((agent, g["base"][0], ("base", gid)))
    rng.shuffle(out)
    return out


def replay(
    workload: Sequence[tuple[int, str, tuple[object, ...]]],
    lookup: Callable[[str], tuple[object, ...] | None],
    store: Callable[[str, tuple[object, ...]], None],
    *,
    verbose: bool = False,
) -> tuple[int, int]:
    """(upstream calls, wrong answers served) for a cache in front of a fake upstream."""
    upstream = wrong = 0
    stored: dict[tuple[object, ...], str] = {}
    for _, text, answer in workload:
        served = lookup(text)
        if served is None:
            upstream += 1
            store(text, answer)
            stored.setdefault(answer, text)
        elif served != answer:
            wrong += 1
            if verbose:
                print(f"  wrong: {text!r} got the answer to {stored.get(served)!r}")
    return upstream, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick run for the test suite")
    parser.add_argument("--entries", type=int, default=None, help="stored entries for lookup p50")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    entries = args.entries or (2_000 if args.short else 100_000)

    all_pairs = load_pairs()
    held_out = [p for p in all_pairs if p.split == "test"]
    pairs = held_out[::4] if args.short else held_out
    print(f"held-out pairs: {len(pairs)} ({sum(p.match for p in pairs)} paraphrases, "
          f"{sum(not p.match for p in pairs)} hard negatives); trained on "
          f"{sum(p.split == 'train' for p in all_pairs)} others")

    embedder = TransformerEmbedder()
    t0 = time.perf_counter()
    embedder.load()
    print(f"model load: {time.perf_counter() - t0:.1f} s")
    texts = sorted({t for p in held_out for t in (p.a, p.b)})
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))

    ours = run_ours(pairs, vectors, embedder, verify=True, threshold=BAR)
    hit_rate, false_merge = _rates(pairs, ours)
    print(f"ours (MiniLM + learned verifier, bar {BAR}): hit rate {hit_rate:.1%}, "
          f"false merges {false_merge:.1%}")
    for kind in sorted({p.kind for p in pairs if not p.match}):
        sel = [s for p, s in zip(pairs, ours, strict=True) if p.kind == kind]
        print(f"  {kind:12} merged {sum(sel)}/{len(sel)}")
    implied = implied_pairs(pairs)
    i_hit, i_false = _rates(implied, run_ours(implied, vectors, embedder, verify=True,
                                              threshold=BAR))
    print(f"  on every pair the held-out labels imply ({len(implied)}: "
          f"{sum(p.match for p in implied)} match): hit rate {i_hit:.1%}, "
          f"false merges {i_false:.1%}")
    cos_only = run_ours(pairs, vectors, embedder, verify=False, threshold=0.95)
    c_hit, c_false = _rates(pairs, cos_only)
    print(f"cosine alone at 0.95 (same model, scoped): hit rate {c_hit:.1%}, "
          f"false merges {c_false:.1%}")

    gpt_hit: float | None = None
    gpt_false: float | None = None
    missing = gptcache_available()
    if missing is not None:
        print(f"GPTCache NOT INSTALLED ({missing}): pip install -e '.[bench]' to compare; "
              "its figures are null below")
    else:
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="gptcache-bench-")
        # GPTCache flushes each store at exit; atexit runs last-registered first, so this
        # removal (registered before any store) runs after those flushes.
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        for threshold in GPTCACHE_THRESHOLDS:
            served = run_gptcache(pairs, vectors, threshold, Path(tmp))
            h, f = _rates(pairs, served)
            if gpt_hit is None:
                gpt_hit, gpt_false = h, f
            print(f"GPTCache (FAISS, SearchDistanceEvaluation) at {threshold}: "
                  f"hit rate {h:.1%}, false merges {f:.1%}")

    p50_us, brute_us = lookup_speed(embedder, pairs, vectors, entries, args.seed)
    print(f"lookup p50 with {entries:,} entries (no embedding): {p50_us:.0f} µs; "
          f"brute-force numpy scan {brute_us:.0f} µs ({brute_us / p50_us:.1f}x ours)")
    single_ms, batched_ms = embedding_speed(embedder, texts, 5 if args.short else 50)
    print(f"embedding p50: {single_ms:.1f} ms for one prompt, {batched_ms:.2f} ms per prompt "
          f"in batches of 32 ({single_ms / batched_ms:.1f}x)")

    workload = fleet_workload(held_out, 3 if args.short else 20, args.seed)
    fleet_vectors = {t: vectors[t] for _, t, _ in workload}
    semantic: SemanticDedup[tuple[object, ...]] = SemanticDedup(embedder, threshold=BAR)

    def semantic_lookup(text: str) -> tuple[object, ...] | None:
        hit = semantic.lookup(text, scope="fleet", vector=fleet_vectors[text])
        return None if hit is None else hit.value

    def semantic_store(text: str, answer: tuple[object, ...]) -> None:
        semantic.insert(text, answer, scope="fleet", vector=fleet_vectors[text])

    up, wrong = replay(workload, semantic_lookup, semantic_store, verbose=True)
    exact: dict[str, tuple[object, ...]] = {}
    up_exact, wrong_exact = replay(workload, exact.get, exact.__setitem__)
    collapse = 1 - up / len(workload)
    print(f"fleet replay, {AGENTS} agents, {len(workload)} requests: semantic collapse "
          f"{collapse:.1%} ({up} upstream calls), {wrong} wrong answers; exact-match cache "
          f"{1 - up_exact / len(workload):.1%} ({up_exact} calls), {wrong_exact} wrong")

    print(json.dumps({
        "hit_rate": round(hit_rate, 4),
        "false_merge_rate": round(false_merge, 4),
        "gptcache_hit_rate": None if gpt_hit is None else round(gpt_hit, 4),
        "gptcache_false_merge_rate": None if gpt_false is None else round(gpt_false, 4),
        "lookup_p50_us": round(p50_us, 1),
        "collapse_rate": round(collapse, 4),
        "wrong_answers": wrong,
    }))


if __name__ == "__main__":
    main()
