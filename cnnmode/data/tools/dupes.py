"""Duplicate groups: exact (same bytes) and near (perceptual hashes within a Hamming distance), found without
comparing every pair: two 64-bit hashes within distance d agree exactly on at least one of d + 1 bit chunks, so
only hashes sharing a chunk are compared (multi-index hashing)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def exact_groups(keys: list[str]) -> list[list[int]]:
    """Indices sharing a key (e.g. a content hash), groups of two or more, each sorted."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key:
            by_key[key].append(i)
    return [g for g in by_key.values() if len(g) > 1]


def near_pairs(hashes: np.ndarray, skip: np.ndarray, max_distance: int) -> dict[tuple[int, int], int]:
    """{(i, j): distance} for i < j whose hashes differ in at most `max_distance` bits; `skip`ped indices are
    left out."""
    idx = np.flatnonzero(~skip)
    h = hashes[idx]
    chunks = max_distance + 1
    bounds = np.linspace(0, 64, chunks + 1).astype(int)
    found: dict[tuple[int, int], int] = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        keys = (h >> np.uint64(lo)) & mask
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
        for a, b in zip(starts[:-1], starts[1:]):
            if b - a > 1:
                _compare_bucket(idx, h, order[a:b], max_distance, found)
    return found


def _compare_bucket(idx: np.ndarray, h: np.ndarray, members: np.ndarray, max_distance: int,
                    found: dict[tuple[int, int], int], block: int = 1024) -> None:
    """Every pair within one bucket, a block of rows at a time so that a huge bucket stays within memory."""
    values = h[members]
    for start in range(0, len(members), block):
        distances = np.bitwise_count(values[start:start + block, None] ^ values[None, :])
        rows, cols = np.nonzero(distances <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                i, j = sorted((int(idx[members[start + r]]), int(idx[members[c]])))
                found[(i, j)] = int(distances[r, c])


def group_pairs(pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (sorted) of the pairs' indices."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in parent:
        groups[root(i)].append(i)
    return sorted(sorted(g) for g in groups.values())
