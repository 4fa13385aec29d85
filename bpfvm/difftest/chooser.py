"""Where the program generator's choices come from. The campaign draws them from `random.Random` (fast, no
shrinking); property tests draw them from hypothesis, which then shrinks a failing program choice by choice.
Every choice shrinks towards its first/lowest option, so generators list the simplest option first."""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence, TypeVar

T = TypeVar("T")


class Chooser(Protocol):
    def between(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""

    def chance(self, p: float) -> bool:
        """True with probability p (shrinks to False)."""

    def pick(self, options: Sequence[T]) -> T:
        """One of `options` (shrinks to the first)."""

    def weighted(self, options: Sequence[tuple[T, float]]) -> T:
        """One of `options` by weight (shrinks to the first)."""


class RandomChooser:
    def __init__(self, seed: int | random.Random):
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)

    def between(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def weighted(self, options: Sequence[tuple[T, float]]) -> T:
        total = sum(w for _, w in options)
        x = self.rng.random() * total
        for value, w in options:
            x -= w
            if x < 0:
                return value
        return options[-1][0]


class DrawChooser:
    """Choices drawn from a hypothesis `draw` (inside `@st.composite` or `st.data()`)."""

    def __init__(self, draw: Callable[[Any], Any]):
        from hypothesis import strategies as st

        self.draw = draw
        self.st = st

    def between(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def chance(self, p: float) -> bool:
        yes = min(max(round(p * 10), 0), 10)
        return self.draw(self.st.sampled_from([False] * (10 - yes) + [True] * yes)) if 0 < yes < 10 else yes == 10

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(self.st.sampled_from(options)) if len(options) > 1 else options[0]

    def weighted(self, options: Sequence[tuple[T, float]]) -> T:
        """sampled_from over the options repeated by weight: as likely as weighted, shrinks to the first."""
        expanded = [value for value, w in options if w > 0 for _ in range(max(1, round(w * 2)))]
        return self.draw(self.st.sampled_from(expanded)) if len(expanded) > 1 else expanded[0]


INTERESTING_IMM32 = (0, 1, -1, 2, 7, 8, 16, 31, 32, 63, 64, 255, 256, 0xFFFF, 0x7FFFFFFF, -0x80000000, -2, 0x10000)
INTERESTING_IMM64 = (0, 1, -1, 1 << 63, (1 << 63) - 1, 0xFFFFFFFF, 1 << 32, 0x8000_0000, 0x1234_5678_9ABC_DEF0)


def imm32(ch: Chooser) -> int:
    if ch.chance(0.6):
        return ch.pick(INTERESTING_IMM32)
    return ch.between(-(1 << 31), (1 << 31) - 1)


def imm64(ch: Chooser) -> int:
    if ch.chance(0.6):
        return ch.pick(INTERESTING_IMM64) & ((1 << 64) - 1)
    return ch.between(0, (1 << 64) - 1)
