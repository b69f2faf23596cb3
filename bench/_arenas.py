"""Which live objects sit in which pymalloc arena (CPython 3.11, 64-bit, Linux): the sparse arenas' tenants.

pymalloc returns an arena (1 MiB) to the system only when every block in it is free. A burst fills
new arenas; what survives it in them keeps each one, however few. This reads the pool header
(16 KiB-aligned, before the blocks) of every object the collector can reach: its arena's index
and how many blocks of the pool are in use, and names the objects that keep the emptiest arenas.
"""

from __future__ import annotations

import bisect
import ctypes
import gc
import sys
from collections import Counter, defaultdict
from typing import Any

POOL = 16 * 1024  # POOL_BITS 14 with the radix tree (3.10+, 64-bit)
SMALL = 512


def _anonymous_ranges() -> tuple[list[int], list[int]]:
    starts, ends = [], []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            span, perms = fields[0], fields[1]
            if not perms.startswith("rw") or (len(fields) > 5 and not fields[5].startswith("[")):
                continue  # file-backed: static objects of libpython and extensions live there
            start, end = (int(x, 16) for x in span.split("-"))
            starts.append(start)
            ends.append(end)
    return starts, ends


def _preheader(o: object) -> int:
    flags = type(o).__flags__
    return (16 if flags & (1 << 14) else 0) + (16 if flags & (1 << 4) else 0)  # HAVE_GC, MANAGED_DICT


def _describe(o: object) -> str:
    try:
        if type(o) is dict:
            return "dict" + repr(list(o)[:5])[:90]
        if type(o) in (str, bytes):
            return type(o).__name__ + repr(o)[:70]
        if type(o) in (list, tuple, set):
            return f"{type(o).__name__}[{len(o)}]" + repr(o)[:70]  # type: ignore[arg-type]
        return type(o).__module__ + "." + type(o).__qualname__ + " " + repr(o)[:60]
    except Exception:  # a repr may fail on a half-torn object
        return type(o).__qualname__


def _holders(targets: list[Any], objects: list[Any], skip: set[int], depth: int = 3) -> dict[int, str]:
    """Who holds each target, ``depth`` levels up (one referrer per level): a pass over the objects per level."""
    chains: dict[int, list[str]] = {id(t): [] for t in targets}
    current = {id(t): id(t) for t in targets}  # target -> the object whose holder is looked for
    for _ in range(depth):
        wanted: dict[int, list[int]] = defaultdict(list)
        for target, o in current.items():
            wanted[o].append(target)
        found: dict[int, tuple[Any, int]] = {}
        for o in objects:
            if id(o) in skip:
                continue
            for x in gc.get_referents(o):
                if id(x) in wanted:
                    held, more = found.get(id(x), (o, -1))
                    found[id(x)] = (held, more + 1)
        current = {}
        for o, targets_of in wanted.items():
            if o in found:
                holder, more = found[o]
                for target in targets_of:
                    chains[target].append(_describe(holder)[:80] + (f" (+{more})" if more else ""))
                    current[target] = id(holder)
    return {target: " <- ".join(chain) for target, chain in chains.items()}


def report(sparsest: int = 12, samples: int = 8) -> str:
    """The arenas with the fewest blocks in use, and the objects the collector reaches in them."""
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # the gateway freezes what it loaded at start: get_objects() would miss that
    gc.collect()
    starts, ends = _anonymous_ranges()
    objects = gc.get_objects()
    seen: set[int] = set()
    reachable: list[Any] = []
    for o in objects:
        for x in (o, *gc.get_referents(o)):
            if id(x) not in seen:
                seen.add(id(x))
                reachable.append(x)
    pools: dict[int, tuple[int, int, int]] = {}  # pool -> (arena index, size class, blocks in use)
    tenants: dict[int, list[Any]] = defaultdict(list)  # arena index -> objects
    for o in reachable:
        address = id(o) - _preheader(o)
        if sys.getsizeof(o) > SMALL:
            continue
        pool = address & ~(POOL - 1)
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or not (starts[i] <= pool and address < ends[i]):
            continue
        if pool not in pools:
            count, arena, size_class = (ctypes.c_uint.from_address(pool + offset).value for offset in (0, 32, 36))
            pools[pool] = (arena, size_class, count)
        arena, size_class, count = pools[pool]
        if size_class < 32 and count and (size_class + 1) * 16 >= sys.getsizeof(o) - 16:
            tenants[arena].append(o)
    in_use: Counter[int] = Counter()
    pool_count: Counter[int] = Counter()
    for arena, size_class, count in pools.values():
        if size_class < 32 and count:
            in_use[arena] += count * (size_class + 1) * 16
            pool_count[arena] += 1
    lines = [f"{len(in_use)} arenas reached; bytes in use (from pool headers) of the {sparsest} emptiest:"]
    skip = {id(objects), id(reachable), id(tenants), *(id(group) for group in tenants.values())}
    emptiest = sorted(in_use.items(), key=lambda item: item[1])[:sparsest]
    targets = [o for arena, _ in emptiest for o in tenants[arena][:samples]]
    skip.add(id(targets))
    held_by = _holders(targets, objects, skip)
    for arena, used in emptiest:
        kinds = Counter(type(o).__qualname__ for o in tenants[arena])
        lines.append(f"arena {arena}: {used / 1024:.0f} KiB in {pool_count[arena]} pools; {kinds.most_common(8)}")
        for o in tenants[arena][:samples]:
            lines.append(f"    {_describe(o)[:100]}\n        held by {held_by[id(o)][:300]}")
    full = sorted(in_use.values())
    lines.append("bytes in use per arena, ascending (KiB): " + " ".join(str(u // 1024) for u in full))
    if frozen:
        gc.freeze()
    return "\n".join(lines)
