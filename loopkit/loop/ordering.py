"""Derive the order callbacks run in from what they declare they read and write.

Rules, applied to every pair of callbacks:

1. A writer of some state runs before a reader of it (``"optimizer.lr"`` and ``"optimizer"`` are the same
   state for this purpose; ``"optimizer.lr"`` and ``"optimizer.momentum"`` are not).
2. ``run_after`` / ``run_before`` add edges of their own. A name that matches no callback present is ignored,
   so a callback may order itself against an optional one. ``"*"`` means every callback that does not say
   ``"*"`` in the same declaration: ``run_after=("*",)`` runs last (a checkpoint that must see every other
   callback's state), ``run_before=("*",)`` first. A callback that names it explicitly in the same declaration
   (``run_after=(Checkpoint,)``) is exempt, so it can still be placed after it.
3. Two callbacks that write the same state must be ordered explicitly; otherwise which one wins would be an
   accident of list order. That is an :class:`OrderingError` naming both, the state, and the fix.
4. A cycle is an :class:`OrderingError` naming every callback on it and why each edge exists.

Among callbacks the rules leave unordered, the order the user listed them in is kept.

Example:
    >>> class Writer:
    ...     writes = ("loss",)
    ...     def after_loss(self, learner): ...
    >>> class Reader:
    ...     reads = ("loss",)
    ...     def after_loss(self, learner): ...
    >>> [type(cb).__name__ for cb in order_callbacks([Reader(), Writer()])]
    ['Writer', 'Reader']
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from .callback import callback_name


class OrderingError(ValueError):
    """The declarations of two or more callbacks contradict each other."""


def _related(a: str, b: str) -> bool:
    """Whether two state paths overlap: equal, or one is a dotted prefix of the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _first_overlap(xs: Sequence[str], ys: Sequence[str]) -> str | None:
    for x in xs:
        for y in ys:
            if _related(x, y):
                return x if len(x) >= len(y) else y
    return None


def _matches(ref: type | str, callback: object, declaration: str = "", owner: object = None) -> bool:
    if ref == "*":
        # Everyone except those who say "*" themselves or name the owner in the same declaration: an
        # explicit "run_after=(Checkpoint,)" beats Checkpoint's "run after everything".
        theirs = getattr(callback, declaration, ())
        return "*" not in theirs and not any(_matches(r, owner) for r in theirs if r != "*")
    if isinstance(ref, str):
        return ref == callback_name(callback)
    return isinstance(callback, ref)


def order_callbacks(callbacks: Sequence[object]) -> list[object]:
    """Return ``callbacks`` in a run order that respects every declaration; raise :class:`OrderingError`."""
    n = len(callbacks)
    names = [callback_name(cb) for cb in callbacks]
    reads = [tuple(getattr(cb, "reads", ())) for cb in callbacks]
    writes = [tuple(getattr(cb, "writes", ())) for cb in callbacks]

    # edges[i][j] = why i must run before j
    edges: dict[int, dict[int, str]] = {i: {} for i in range(n)}
    explicit: set[tuple[int, int]] = set()
    for i, cb in enumerate(callbacks):
        for j, other in enumerate(callbacks):
            if i == j:
                continue
            if any(_matches(ref, other, "run_before", cb) for ref in getattr(cb, "run_before", ())):
                edges[i][j] = f"{names[i]}.run_before names {names[j]}"
                explicit.add((i, j))
            if any(_matches(ref, other, "run_after", cb) for ref in getattr(cb, "run_after", ())):
                edges[j][i] = f"{names[i]}.run_after names {names[j]}"
                explicit.add((j, i))

    for i in range(n):
        for j in range(i + 1, n):
            clash = _first_overlap(writes[i], writes[j])
            if clash is not None and (i, j) not in explicit and (j, i) not in explicit:
                raise OrderingError(
                    f"{names[i]} and {names[j]} both write {clash!r}, so which one wins would depend on list "
                    f"order. Resolve it by declaring the order: run_after=({names[i]},) on {names[j]} (or "
                    f"run_before=({names[j]},) on {names[i]}) if {names[j]} should have the last word, or the "
                    f"reverse; or drop one of them"
                )

    for w in range(n):
        for r in range(n):
            if w == r or (w, r) in explicit or (r, w) in explicit:
                continue
            state = _first_overlap(writes[w], reads[r])
            if state is not None and _first_overlap(writes[r], (state,)) is None:
                edges[w].setdefault(r, f"{names[w]} writes {state!r}, which {names[r]} reads")

    return [callbacks[i] for i in _toposort(n, edges, names)]


def _toposort(n: int, edges: dict[int, dict[int, str]], names: list[str]) -> list[int]:
    """Kahn's algorithm, taking the lowest listed index among the ready nodes so that ties keep list order."""
    indegree = [0] * n
    for i in range(n):
        for j in edges[i]:
            indegree[j] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in edges[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < n:
        raise OrderingError(_describe_cycle(_find_cycle(set(range(n)) - set(order), edges), edges, names))
    return order


def _find_cycle(remaining: set[int], edges: dict[int, dict[int, str]]) -> list[int]:
    """Walk backwards inside the unsortable remainder until a node repeats; that stretch is a cycle.

    Every node left over by Kahn's algorithm has a predecessor that is also left over, so walking
    predecessors never gets stuck (walking successors could, at a node downstream of the cycle).
    """
    node = min(remaining)
    path: list[int] = []
    seen: dict[int, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in sorted(remaining) if node in edges[p])
    cycle = [*path[seen[node] :], node]
    return cycle[::-1]


def _describe_cycle(cycle: list[int], edges: dict[int, dict[int, str]], names: list[str]) -> str:
    steps = "; ".join(edges[a][b] for a, b in itertools.pairwise(cycle))
    loop = " -> ".join(names[i] for i in cycle)
    return (
        f"callback order has a cycle: {loop} ({steps}). Remove one of these run_after/run_before "
        f"declarations, or split the state one of them both reads and writes"
    )
