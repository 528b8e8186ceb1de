"""Keyed pseudo-random permutations of range(n) evaluated pointwise in O(1) memory."""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
ROUNDS = 4  # Luby-Rackoff: four Feistel rounds with pseudo-random round functions give a strong PRP


def mix64(x: int) -> int:
    """splitmix64 finalizer: a fast, well-distributed 64-bit integer hash (platform independent)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class FeistelPermutation:
    """Bijection of range(n) from a balanced Feistel network on 2h bits plus cycle walking.

    Unlike materialising np.random.permutation(n), this needs no O(n) memory and any position
    can be evaluated directly, which lets a sampler jump to an arbitrary sample number.
    """

    def __init__(self, n: int, key: int) -> None:
        if n < 1:
            raise ValueError(f"permutation size must be positive, got {n}")
        self.n = n
        self.half_bits = max(1, ((n - 1).bit_length() + 1) // 2)
        self.half_mask = (1 << self.half_bits) - 1
        self.round_keys = [mix64((key & _MASK64) ^ mix64(r)) for r in range(ROUNDS)]

    def _encrypt(self, x: int) -> int:
        """One pass of the Feistel network over the 2h-bit domain (itself a bijection)."""
        left, right = x >> self.half_bits, x & self.half_mask
        for round_key in self.round_keys:
            left, right = right, left ^ (mix64(round_key ^ right) & self.half_mask)
        return (left << self.half_bits) | right

    def __call__(self, i: int) -> int:
        """Image of i under the permutation."""
        if not 0 <= i < self.n:
            raise IndexError(f"{i} outside range({self.n})")
        # Cycle walking: re-encrypt until back inside range(n); the domain is < 4n, so few steps.
        x = self._encrypt(i)
        while x >= self.n:
            x = self._encrypt(x)
        return x

    def __len__(self) -> int:
        return self.n
