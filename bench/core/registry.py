"""One small generic registry, shared by heads and suites.

Names are the public interface of the benchmark (they appear in configs, result files and
leaderboards), so a duplicate is an error rather than a silent override, and an unknown name
answers with the closest registered names instead of a bare KeyError.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from bench.core.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, choices, n: int = 3) -> str:
    """A "did you mean" phrase for error messages ('' when nothing is close)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name]!r}); "
                    f"pick another name or bump the existing class's version instead."
                )
            self._items[name] = obj
            obj.name = name  # metadata as data: the class carries its registered name
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{suggest(name, self._items)} Registered {self.kind}s: {known}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def unregister(self, name: str) -> None:
        """For tests that register throw-away entries."""
        self._items.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._items
