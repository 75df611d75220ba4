"""Seeds and counter-based random numbers: no hidden randomness, no dependence on worker counts.

A seed for a piece of work is derived from its coordinates (base seed, shard, pass, ...), never
from the order work was scheduled in. Random numbers for a given example are a hash of
(seed, example index, position), so they are the same whichever worker, batch or process draws
them, and whole batches get theirs in one vectorised numpy call.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def derive_seed(*parts: int | str) -> int:
    """A 64-bit seed from coordinates, e.g. derive_seed(seed, "pairs", shard, dupe_pass)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def python_rng(*parts: int | str) -> random.Random:
    """A `random.Random` for sequential, branchy work (building pairs) at these coordinates."""
    return random.Random(derive_seed(*parts))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, rows: np.ndarray, columns: np.ndarray, stream: int = 0) -> np.ndarray:
    """Floats in [0, 1) for every (row, column): `rows` (B,) example indices, `columns` (L,)
    positions; different `stream`s give independent draws for the same cells. Shape (B, L)."""
    with np.errstate(over="ignore"):
        key = np.uint64(derive_seed(seed, stream))
        r = mix64(rows.astype(np.uint64)[:, None] * _GOLDEN + key)
        x = mix64(r + columns.astype(np.uint64)[None, :] * _M2)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
