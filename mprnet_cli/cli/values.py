"""Option value parsers for Typer's `parser=` hook.

A bad value is refused in our words ("must be a whole number from 1 to 100, got '0'"), not
a validation library's, and the help shows the option's metavar and the range in its text
instead of type names (`<int range>`, `x>=1`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

import typer

from mprnet_cli.choices import spoken_list

E = TypeVar("E", bound=Enum)


def one_of(words: Sequence[str]) -> str:
    """ "a, b or c" (`choices.spoken_list`, which help outside the CLI uses too)."""
    return spoken_list(list(words))


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    if low is not None:
        return f"of at least {low:g}"
    return f"of at most {high:g}"


def whole(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    """A parser for a whole number within [low, high] (either end open when None)."""

    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise typer.BadParameter(f"expected a whole number, got {value!r}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise typer.BadParameter(f"must be a whole number {_bounds(low, high)}, got {value!r}")
        return number

    return parse


def number(low: float | None = None, high: float | None = None) -> Callable[[Any], float]:
    """A parser for a finite number within [low, high] (nan and inf are refused)."""

    def parse(value: Any) -> float:
        try:
            result = float(value) if isinstance(value, (int, float)) else float(str(value))
        except ValueError:
            raise typer.BadParameter(f"expected a number, got {value!r}") from None
        if (
            not math.isfinite(result)
            or (low is not None and result < low)
            or (high is not None and result > high)
        ):
            raise typer.BadParameter(f"must be a number {_bounds(low, high)}, got {value!r}")
        return result

    return parse


def choice(kind: type[E]) -> Callable[[Any], E]:
    """A parser for one of an enum's values (any letter case); Typer still lists them."""
    values = [str(member.value) for member in kind]

    def parse(value: Any) -> E:
        if isinstance(value, kind):
            return value
        text = str(value).strip().lower()
        for member in kind:
            if str(member.value) == text:
                return member
        raise typer.BadParameter(f"expected {one_of(values)}, got {value!r}")

    return parse


def plural(count: int, word: str) -> str:
    """ "1 thread", "2 threads": no "1 threads" or "(s)" in what we print."""
    return f"{count} {word}{'' if count == 1 else 's'}"
