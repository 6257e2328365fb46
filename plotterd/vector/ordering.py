"""Order lines to cut pen-up travel: greedy nearest neighbour on ``vpype.LineIndex``, then an
optional local search (2-opt, Or-opt and perturbation kicks) with neighbour lists.

vpype's own ``linesort`` lives in vpype_cli and is only reachable through
``vpype_cli.execute``, which is not thread-safe (it registers commands on a global click
group) while the daemon is threaded; hence this re-implementation on vpype's public core.

Lines are complex numpy arrays (x + iy), as in vpype. Reversing a line is allowed unless
``flip=False``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import vpype as vp
from scipy.spatial import cKDTree


def line_ends(lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(first points, last points) of non-empty complex lines, as two arrays."""
    counts = np.array([len(ln) for ln in lines], dtype=np.int64)
    allc = np.concatenate(lines)
    last = np.cumsum(counts) - 1
    return allc[last - counts + 1], allc[last]


def pen_up_length(lines: list[np.ndarray], start: complex | None = None) -> float:
    """Total pen-up travel between consecutive lines (plus from ``start`` if given)."""
    if not lines:
        return 0.0
    starts, ends = line_ends(lines)
    total = float(np.abs(starts[1:] - ends[:-1]).sum())
    if start is not None:
        total += float(abs(starts[0] - start))
    return total


def greedy(lines: list[np.ndarray], start: complex = 0j, flip: bool = True) -> list[np.ndarray]:
    """Nearest-neighbour order from ``start``, using vpype's KD-tree index of line ends."""
    lines = [ln for ln in lines if len(ln)]
    if len(lines) < 2:
        return lines
    index = vp.LineIndex(lines, reverse=flip)
    out: list[np.ndarray] = []
    pos = start
    while len(index) > 0:
        idx, reverse = index.find_nearest(pos)
        line = index.pop(idx)
        if line is None:  # pragma: no cover - find_nearest only returns available lines
            continue
        if reverse:
            line = np.flip(line)
        out.append(line)
        pos = line[-1]
    return out


class _Tour:
    """A plotting order start -> L[order[0]] -> ... -> L[order[n-1]] (free end), each line
    possibly flipped, improved in place by 2-opt and Or-opt moves.

    Plain Python lists: the searches read single entries far more often than they move
    runs, and list indexing is several times cheaper than numpy scalar indexing.
    """

    def __init__(self, lines: list[np.ndarray], start: complex, neighbours: int):
        n = self.n = len(lines)
        self.start = start
        first_a, last_a = line_ends(lines)
        first, last = first_a.tolist(), last_a.tolist()
        self.hd = list(first)  # hd[m]: where line m's pen goes down (its first point as drawn)
        self.tl = list(last)  # tl[m]: where it comes up
        self.order = list(range(n))  # order[p] = line at position p
        self.pos = list(range(n))  # pos[m] = position of line m
        self.flipped = [False] * n
        self.total = 0.0  # change of the pen-up length made so far (negative: shorter)
        self.log: list[tuple] | None = None  # while set, every change is recorded for undo
        both = np.concatenate([first_a, last_a])
        xy = np.column_stack([both.real, both.imag])
        self.tree = cKDTree(xy)
        k = min(neighbours + 1, 2 * n)
        nbr = np.atleast_2d(self.tree.query(xy, k=k)[1]) % n
        self.k = k
        # per end point, the lines with an end near it (either end: a short line's ends are
        # close together, and which of them is its head depends on the current order)
        self.near = [list(dict.fromkeys(row)) for row in nbr.tolist()]
        self.near_start = list(
            dict.fromkeys((np.atleast_1d(self.tree.query([start.real, start.imag], k=k)[1])
                           % n).tolist())
        )

    def lines_near_head(self, m: int) -> list[int]:
        return self.near[m + self.n if self.flipped[m] else m]

    def lines_near_tail(self, m: int) -> list[int]:
        return self.near[m if self.flipped[m] else m + self.n]

    def before(self, p: int) -> complex:
        """Where the pen is before position p: the previous line's tail, or the start."""
        return self.start if p == 0 else self.tl[self.order[p - 1]]

    def reverse(self, i: int, j: int) -> None:
        """Reverse the run of positions i..j, flipping each line in it (its own inverse)."""
        if self.log is not None:
            self.log.append(("reverse", i, j))
        order, pos, hd, tl, fl = self.order, self.pos, self.hd, self.tl, self.flipped
        order[i : j + 1] = order[i : j + 1][::-1]
        for p in range(i, j + 1):
            m = order[p]
            pos[m] = p
            hd[m], tl[m] = tl[m], hd[m]
            fl[m] = not fl[m]

    def move(self, s: int, t: int, u: int, flip: bool) -> None:
        """Move the run s..t to just before old position u (u < s or u > t + 1)."""
        if self.log is not None:
            length = t - s + 1
            # the inverse moves the run back from where it lands
            back = (u, u + length - 1, t + 1) if u < s else (u - length, u - 1, s)
            self.log.append(("move", *back, flip))
        order = self.order
        seg = order[s : t + 1]
        if flip:
            seg = seg[::-1]
            for m in seg:
                self.hd[m], self.tl[m] = self.tl[m], self.hd[m]
                self.flipped[m] = not self.flipped[m]
        if u < s:
            lo, hi = u, t + 1
            order[lo:hi] = seg + order[u:s]
        else:
            lo, hi = s, u
            order[lo:hi] = order[t + 1 : u] + seg
        pos = self.pos
        for p in range(lo, hi):
            pos[order[p]] = p

    def try_two_opt(self, i: int, eps: float, span: int) -> tuple[int, int] | None:
        """An improving 2-opt move around the travel into position i, applied; or None.

        Reversing the run i..j replaces the travels before(i) -> head(i) and
        tail(j) -> head(j+1) by before(i) -> tail(j) and head(i) -> head(j+1). An improving
        move makes at least one new travel shorter than a removed one next to it, so for the
        travel a -> b into position i only lines near a (their tail joins a) and lines near b
        (their head joins b) are tried, on either side of i. Runs longer than ``span`` are
        not reversed (the reversal costs O(length)).
        """
        n, order, pos, hd, tl = self.n, self.order, self.pos, self.hd, self.tl
        mi = order[i]
        a = self.before(i)
        b = hd[mi]
        d_ab = abs(a - b)
        if d_ab <= eps:
            return None
        near_a = self.near_start if i == 0 else self.lines_near_tail(order[i - 1])
        for m in near_a:
            j = pos[m]
            c = tl[m]
            d_ac = abs(a - c)
            if d_ac >= d_ab - eps:
                continue
            if j - i > span or i - j > span:
                continue
            if j >= i:  # reverse i..j: a -> tail(j), head(i) -> head(j+1)
                if j + 1 < n:
                    e = hd[order[j + 1]]
                    delta = d_ac + abs(b - e) - d_ab - abs(c - e)
                else:
                    delta = d_ac - d_ab
                if delta < -eps:
                    self.total += delta
                    self.reverse(i, j)
                    return (i, j)
            elif j < i - 1:  # reverse j+1..i-1: tail(j) -> a, head(j+1) -> b
                e = hd[order[j + 1]]
                delta = d_ac + abs(e - b) - d_ab - abs(c - e)
                if delta < -eps:
                    self.total += delta
                    self.reverse(j + 1, i - 1)
                    return (j + 1, i - 1)
        for m in self.lines_near_head(mi):
            q = pos[m]
            e = hd[m]
            d_be = abs(b - e)
            if d_be >= d_ab - eps:
                continue
            if q - i > span or i - q > span:
                continue
            if q < i:  # reverse q..i-1: before(q) -> a, head(q) -> b
                f = self.before(q)
                delta = abs(f - a) + d_be - d_ab - abs(f - e)
                if delta < -eps:
                    self.total += delta
                    self.reverse(q, i - 1)
                    return (q, i - 1)
            elif q > i:  # reverse i..q-1: a -> tail(q-1), head(i) -> head(q)
                f = tl[order[q - 1]]
                delta = abs(a - f) + d_be - d_ab - abs(f - e)
                if delta < -eps:
                    self.total += delta
                    self.reverse(i, q - 1)
                    return (i, q - 1)
        return None

    def try_or_opt(self, s: int, eps: float, max_run: int = 3) -> tuple[int, int] | None:
        """Lift the run s..s+L-1 (L <= max_run) out and put it back, maybe reversed, next to
        a line with an end near one of the run's ends. Returns the changed position range."""
        n, order, pos, hd, tl = self.n, self.order, self.pos, self.hd, self.tl
        p = self.before(s)
        hs = hd[order[s]]
        for t in range(s, min(s + max_run, n)):
            ts = tl[order[t]]
            if t + 1 < n:
                nx = hd[order[t + 1]]
                gain = abs(p - hs) + abs(ts - nx) - abs(p - nx)
            else:
                gain = abs(p - hs)
            if gain <= eps:
                continue
            best_cost, best_u, best_flip = -eps, -1, False
            # insertion points next to lines near either end of the run: between u-1 and u
            seen: set[int] = set()
            for m in self.lines_near_head(order[s]) + self.lines_near_tail(order[t]):
                pm = pos[m]
                for u in (pm, pm + 1):
                    if s <= u <= t + 1 or u in seen:
                        continue
                    seen.add(u)
                    x = self.start if u == 0 else tl[order[u - 1]]
                    if u < n:
                        y = hd[order[u]]
                        d_xy = abs(x - y)
                        fwd = abs(x - hs) + abs(ts - y) - d_xy
                        rev = abs(x - ts) + abs(hs - y) - d_xy
                    else:
                        fwd, rev = abs(x - hs), abs(x - ts)
                    if fwd - gain < best_cost:
                        best_cost, best_u, best_flip = fwd - gain, u, False
                    if rev - gain < best_cost:
                        best_cost, best_u, best_flip = rev - gain, u, True
            if best_u >= 0:
                self.total += best_cost
                self.move(s, t, best_u, best_flip)
                return (min(s, best_u) - 1, max(t + 1, best_u))
        return None

    def improve(self, eps: float = 1e-9, seed: list[int] | None = None,
                span: int | None = None) -> int:
        """Local search with a work queue of lines ("don't look bits"): a line is looked at
        again only when a travel next to it changed. ``seed``: the lines to start from (all
        by default); ``span``: the longest run a 2-opt move may reverse. Returns the number of
        moves made."""
        n = self.n
        span = n if span is None else span
        queue = deque(range(n) if seed is None else seed)
        queued = [False] * n
        for m in queue:
            queued[m] = True
        moves = 0
        limit = 50 * n
        while queue and moves < limit:
            m = queue.popleft()
            queued[m] = False
            changed = None
            i = self.pos[m]
            for p in (i, i + 1):
                if p < n:
                    changed = self.try_two_opt(p, eps, span)
                    if changed:
                        break
            if changed is None:
                changed = self.try_or_opt(i, eps)
            if changed is None:
                continue
            moves += 1
            lo, hi = changed
            for p in (lo - 1, lo, hi, hi + 1, i):
                if 0 <= p < n and not queued[self.order[p]]:
                    queued[self.order[p]] = True
                    queue.append(self.order[p])
        return moves

    def kicks(self, count: int, seed: int = 0, max_run: int = 30, span: int = 300,
              eps: float = 1e-9) -> int:
        """Iterated local search: ``count`` times, swap two short neighbouring runs (a local
        "double bridge", which 2-opt and Or-opt cannot undo in one move), re-optimise around
        it, and keep the result only if the total travel went down. The repair only reverses
        runs up to ``span`` lines, which keeps a kick cheap. Returns the kicks kept."""
        n = self.n
        if n < 8:
            return 0
        rng = np.random.default_rng(seed)
        kept = 0
        for a, l1, l2 in zip(rng.integers(1, n - 2, count).tolist(),
                             rng.integers(1, max_run + 1, count).tolist(),
                             rng.integers(1, max_run + 1, count).tolist(), strict=True):
            b = min(a + l1, n - 1)
            c = min(b + l2, n)
            if not a < b < c:
                continue
            order, hd, tl = self.order, self.hd, self.tl
            before_total = self.total
            self.log = []
            x = self.before(a)
            old = abs(x - hd[order[a]]) + abs(tl[order[b - 1]] - hd[order[b]])
            new = abs(x - hd[order[b]]) + abs(tl[order[c - 1]] - hd[order[a]])
            if c < n:
                y = hd[order[c]]
                old += abs(tl[order[c - 1]] - y)
                new += abs(tl[order[b - 1]] - y)
            self.move(b, c - 1, a, False)  # A B C D -> A C B D
            self.total += new - old
            touched = {order[p] for p in (a - 1, a, a + c - b - 1, a + c - b, c - 1, min(c, n - 1))}
            self.improve(eps, seed=sorted(touched), span=span)
            log, self.log = self.log, None
            if self.total < before_total - eps:
                kept += 1
            else:  # undo, newest change first
                for op in reversed(log):
                    if op[0] == "reverse":
                        self.reverse(op[1], op[2])
                    else:
                        self.move(op[1], op[2], op[3], op[4])
                self.total = before_total
        return kept

    def lines(self, lines: list[np.ndarray]) -> list[np.ndarray]:
        return [np.flip(lines[m]) if self.flipped[m] else lines[m] for m in self.order]


def two_opt(
    lines: list[np.ndarray], start: complex = 0j, neighbours: int = 16, kicks: int | None = None
) -> list[np.ndarray]:
    """Improve an order by local search: 2-opt (reverse a run of lines, flipping each) and
    Or-opt (move a run of up to 3 lines elsewhere, maybe reversed) until neither helps, then
    ``kicks`` rounds of perturbation and repair (default: one per 5 lines; seeded, so the
    result is deterministic).

    Moves come from neighbour lists (a KD-tree of all line ends, ``neighbours`` per end) and a
    work queue, so the search costs about O(n k) per sweep rather than the O(n^2) of vpype's
    ``linesort --two-opt``.
    """
    if len(lines) < 3:
        return list(lines)
    tour = _Tour(lines, start, neighbours)
    tour.improve()
    tour.kicks(len(lines) // 5 if kicks is None else kicks, span=1000)
    return tour.lines(lines)


def sort_lines(
    lines: list[np.ndarray], start: complex = 0j, flip: bool = True, use_two_opt: bool = False
) -> list[np.ndarray]:
    """Greedy order, then 2-opt if asked (2-opt may flip lines, so only with ``flip``)."""
    ordered = greedy(lines, start, flip)
    if use_two_opt and flip:
        ordered = two_opt(ordered, start)
    return ordered
