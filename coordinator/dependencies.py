"""The dependency graph between tasks: cycle checks and inherited priority.

Both are linear in the size of the graph (one depth-first search with a shared visited set):
ingest holds its lock while it checks, and claimers recompute priorities whenever they relist
`pending/`, so neither may grow faster than the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

__all__ = ["find_cycle", "inherited_ranks"]


def find_cycle(
    starts: Iterable[str], deps_of: Callable[[str], tuple[str, ...]]
) -> tuple[str, ...] | None:
    """A dependency cycle reachable from `starts`, as the path that closes it
    (`("c", "a", "b", "c")`), or None. O(V + E) over the reachable part of the graph."""
    done: set[str] = set()  # fully explored, on no cycle: shared by every start
    for start in starts:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(deps_of(start))]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if dep in on_path:
                return (*path[path.index(dep):], dep)
            if dep in done:
                continue
            path.append(dep)
            on_path.add(dep)
            stack.append(iter(deps_of(dep)))
    return None


def inherited_ranks(
    ranks: Mapping[str, int], deps: Mapping[str, tuple[str, ...]]
) -> dict[str, int]:
    """Each task's claim rank after priority inheritance: a task is claimed at least as early
    as the most urgent task that (transitively) waits for it, so a low-priority task never
    holds a critical one back. `ranks` and `deps` cover the tasks still to run; lower is
    more urgent. Each task is lowered at most once per rank level: O(levels × (V + E))."""
    effective = dict(ranks)
    for start in sorted(ranks, key=ranks.__getitem__):
        rank = effective[start]
        stack = [start]
        while stack:
            for dep in deps.get(stack.pop(), ()):
                if dep in effective and effective[dep] > rank:
                    effective[dep] = rank
                    stack.append(dep)
    return effective
