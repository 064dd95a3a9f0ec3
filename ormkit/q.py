"""``Q`` objects: lookups combined with ``|``, ``&`` and ``~``, nested to any depth.

A ``Q`` is plain data (children, connector, negated); the engine turns it into a condition
tree when it is passed to ``filter()``.
"""

from __future__ import annotations

from typing import Any


class Q:
    """A condition: ``Q(age__gt=18) | Q(vip=True)``, ``~Q(name__startswith="A")``."""

    AND = "AND"
    OR = "OR"

    __slots__ = ("children", "connector", "negated")

    def __init__(self, *args: Q, **lookups: Any) -> None:
        for a in args:
            if not isinstance(a, Q):
                raise TypeError(f"Q() takes Q objects and keyword lookups, got {a!r}")
        self.children: list[Any] = [*args, *lookups.items()]
        self.connector = Q.AND
        self.negated = False

    def _combine(self, other: object, connector: str) -> Q:
        if not isinstance(other, Q):
            return NotImplemented
        q = Q()
        q.connector = connector
        q.children = [self, other]
        return q

    def __or__(self, other: Q) -> Q:
        return self._combine(other, Q.OR)

    def __and__(self, other: Q) -> Q:
        return self._combine(other, Q.AND)

    def __invert__(self) -> Q:
        q = Q()
        q.children = [self]
        q.negated = True
        return q

    def __repr__(self) -> str:
        inner = f" {self.connector} ".join(repr(c) if isinstance(c, Q) else f"{c[0]}={c[1]!r}" for c in self.children)
        return f"{'~' if self.negated else ''}Q({inner})"
