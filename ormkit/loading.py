"""Relationship loading options: ``selectinload``, ``joinedload``, ``noload``.

A dotted path loads each level with the same strategy (``selectinload("posts.comments")``);
chaining changes the strategy below (``joinedload("author").selectinload("posts")`` loads
each post's author with a join and every author's posts with an IN query).
"""

from __future__ import annotations


class LoadOption:
    """A path of ``(relation, strategy)`` pairs from the queried model down."""

    __slots__ = ("path",)

    def __init__(self, path: list[tuple[str, str]]) -> None:
        self.path = path

    def _extend(self, relation: str, strategy: str) -> LoadOption:
        return LoadOption(self.path + _split(relation, strategy))

    def selectinload(self, relation: str) -> LoadOption:
        return self._extend(relation, "selectin")

    def joinedload(self, relation: str) -> LoadOption:
        return self._extend(relation, "joined")

    def noload(self, relation: str) -> LoadOption:
        return self._extend(relation, "noload")

    def __repr__(self) -> str:
        return " -> ".join(f"{s if s == 'noload' else s + 'load'}({r!r})" for r, s in self.path)


def _split(path: str, strategy: str) -> list[tuple[str, str]]:
    if not isinstance(path, str) or not path:
        raise TypeError(f"a relationship path is a non-empty str like 'posts' or 'posts.comments', got {path!r}")
    names = path.split(".")
    if not all(names):
        raise TypeError(f"the relationship path {path!r} has an empty name in it; write it like 'posts.comments'")
    return [(name, strategy) for name in names]


def selectinload(path: str) -> LoadOption:
    """Load with one extra ``SELECT ... WHERE key IN (...)`` query per level (best for
    collections)."""
    return LoadOption(_split(path, "selectin"))


def joinedload(path: str) -> LoadOption:
    """Load with a LEFT OUTER JOIN in the same query (best for many-to-one)."""
    return LoadOption(_split(path, "joined"))


def noload(path: str) -> LoadOption:
    """Do not load: the attribute is ``[]`` (collections) or ``None``. An object the session
    already holds keeps what was loaded (or assigned) there before."""
    return LoadOption(_split(path, "noload"))


def paths_of(options: tuple[object, ...]) -> list[list[tuple[str, str]]]:
    out = []
    for o in options:
        if isinstance(o, LoadOption):
            out.append(o.path)
        elif isinstance(o, str):
            out.append(_split(o, "selectin"))
        else:
            raise TypeError(f"options() takes selectinload(...), joinedload(...) or noload(...), got {o!r}")
    return out
