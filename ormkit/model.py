"""Declaring models: ``Base``, ``Mapped``, ``mapped_column``, ``ForeignKey``, ``relationship``.

At class creation a model's columns are read from its annotations and sent once to the
engine, which keeps the schema; the class keeps only a handle (``__ormkit__``).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import re
import sys
import types
import typing
from typing import Any, ClassVar, Generic, TypeVar

from ormkit import _ormkit
from ormkit.exceptions import RelationNotLoaded
from ormkit.q import Q

T = TypeVar("T")

_MISSING: Any = object()


class Mapped(Generic[T]):
    """Annotation marker: ``name: Mapped[str]`` declares a column (or, with
    ``relationship()``, a relation)."""

    if typing.TYPE_CHECKING:

        @typing.overload
        def __get__(self, obj: None, owner: Any) -> Any: ...
        @typing.overload
        def __get__(self, obj: object, owner: Any) -> T: ...
        def __get__(self, obj: Any, owner: Any) -> Any: ...
        def __set__(self, obj: Any, value: T) -> None: ...


class TypeMarker:
    """A column type given explicitly to ``mapped_column`` (``JSON``, ``BigInteger``,
    ``DateTime(timezone=True)``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return {"json": "JSON", "bigint": "BigInteger", "datetimetz": "DateTime(timezone=True)"}.get(
            self.name, self.name
        )


JSON = TypeMarker("json")
"""JSON column: JSONB on PostgreSQL, TEXT holding JSON on SQLite."""
BigInteger = TypeMarker("bigint")
"""64-bit integer column (``int`` columns are INTEGER, 32-bit on PostgreSQL)."""


def DateTime(timezone: bool = False) -> TypeMarker:  # noqa: N802 - reads like a type
    """``DateTime(timezone=True)`` stores timezone-aware datetimes (TIMESTAMPTZ)."""
    return TypeMarker("datetimetz" if timezone else "datetime")


class ForeignKey:
    """``ForeignKey("users.id", ondelete="CASCADE")``."""

    __slots__ = ("ondelete", "onupdate", "target")

    def __init__(self, target: str, ondelete: str | None = None, onupdate: str | None = None) -> None:
        if not isinstance(target, str):
            raise TypeError(f'ForeignKey() takes "table.column", got {target!r}')
        self.target = target
        self.ondelete = ondelete
        self.onupdate = onupdate

    def __repr__(self) -> str:
        return f"ForeignKey({self.target!r})"


class MappedColumn:
    """What ``mapped_column()`` returns; read once at class creation."""

    __slots__ = (
        "autoincrement",
        "default",
        "foreign_key",
        "index",
        "max_length",
        "nullable",
        "primary_key",
        "type",
        "unique",
    )

    def __init__(
        self,
        *args: Any,
        primary_key: bool = False,
        nullable: bool | None = None,
        unique: bool = False,
        index: bool = False,
        default: Any = _MISSING,
        max_length: int | None = None,
        autoincrement: bool | None = None,
    ) -> None:
        self.type: TypeMarker | None = None
        self.foreign_key: ForeignKey | None = None
        for a in args:
            if isinstance(a, TypeMarker):
                self.type = a
            elif isinstance(a, ForeignKey):
                self.foreign_key = a
            elif a is JSON or a is dict or a is list:
                self.type = JSON
            else:
                raise TypeError(
                    f"mapped_column() got {a!r}; pass a type marker (JSON, BigInteger, DateTime(...)) or a ForeignKey"
                )
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
            raise TypeError(f"mapped_column(max_length=...) must be a positive int, got {max_length!r}")
        self.primary_key = primary_key
        self.nullable = nullable
        self.unique = unique
        self.index = index
        self.default = default
        self.max_length = max_length
        self.autoincrement = autoincrement


def mapped_column(
    *args: Any,
    primary_key: bool = False,
    nullable: bool | None = None,
    unique: bool = False,
    index: bool = False,
    default: Any = _MISSING,
    max_length: int | None = None,
    autoincrement: bool | None = None,
) -> Any:
    """Declares a column. ``default`` may be a value or a zero-argument callable, applied when
    an instance is constructed without that field."""
    return MappedColumn(
        *args,
        primary_key=primary_key,
        nullable=nullable,
        unique=unique,
        index=index,
        default=default,
        max_length=max_length,
        autoincrement=autoincrement,
    )


class Relationship:
    """What ``relationship()`` returns; the related class comes from the annotation."""

    __slots__ = ("back_populates", "foreign_keys", "lazy", "name", "owner", "secondary", "target", "uselist")

    def __init__(
        self,
        back_populates: str | None = None,
        lazy: str = "select",
        uselist: bool | None = None,
        secondary: Any = None,
        foreign_keys: str | None = None,
    ) -> None:
        if lazy not in ("select", "selectin", "joined", "noload", "raise"):
            raise ValueError(
                f"relationship(lazy={lazy!r}) must be one of 'select', 'selectin', 'joined', 'noload', 'raise'"
            )
        self.back_populates = back_populates
        self.lazy = lazy
        self.uselist = uselist
        self.secondary = secondary
        self.foreign_keys = foreign_keys
        self.target: str | None = None
        self.name: str = ""
        self.owner: str = ""

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return self
        if self.name in obj._ormkit_noload:
            return None
        raise RelationNotLoaded(
            f"{self.owner}.{self.name} is not loaded, and reading it never runs a query; load it with "
            f'.options(selectinload("{self.name}")) on the query, or await session.load(obj, "{self.name}")'
        )


def relationship(
    back_populates: str | None = None,
    lazy: str = "select",
    uselist: bool | None = None,
    secondary: Any = None,
    foreign_keys: str | None = None,
) -> Any:
    """Declares a relationship to another model.

    The join columns come from ``ForeignKey`` columns: the model holding the key is the
    many side. ``secondary`` names the association table (or model) of a many-to-many.
    ``uselist=False`` on a one-to-many makes it one-to-one. ``foreign_keys`` names the key
    column when several link the two models. ``lazy`` is the default loading: ``"select"``
    and ``"raise"`` (load only on request: reading an unloaded relationship raises
    ``RelationNotLoaded``), ``"selectin"`` / ``"joined"`` (loaded with every query of the
    model), ``"noload"`` (always empty).
    """
    return Relationship(
        back_populates=back_populates, lazy=lazy, uselist=uselist, secondary=secondary, foreign_keys=foreign_keys
    )


class Column:
    """The class attribute standing for a column (``User.age``). Instances keep their
    values in ``__dict__``, which takes precedence, so reading them costs nothing extra."""

    __slots__ = ("model", "name", "type")

    def __init__(self, name: str, model: str, type_: str) -> None:
        self.name = name
        self.model = model
        self.type = type_

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return self
        return None

    # Column expressions for select(): each is the Q lookup of the same meaning.
    __hash__ = object.__hash__

    def _q(self, lookup: str, value: Any) -> Q:
        return Q(**{f"{self.name}__{lookup}": value})

    def __eq__(self, other: Any) -> Q:  # type: ignore[override]
        return self._q("exact", other)

    def __ne__(self, other: Any) -> Q:  # type: ignore[override]
        return self._q("ne", other)

    def __lt__(self, other: Any) -> Q:
        return self._q("lt", other)

    def __le__(self, other: Any) -> Q:
        return self._q("lte", other)

    def __gt__(self, other: Any) -> Q:
        return self._q("gt", other)

    def __ge__(self, other: Any) -> Q:
        return self._q("gte", other)

    def in_(self, values: Any) -> Q:
        return self._q("in", list(values))

    def not_in(self, values: Any) -> Q:
        return self._q("notin", list(values))

    def like(self, pattern: str) -> Q:
        return self._q("like", pattern)

    def ilike(self, pattern: str) -> Q:
        return self._q("ilike", pattern)

    def contains(self, value: str) -> Q:
        return self._q("contains", value)

    def startswith(self, value: str) -> Q:
        return self._q("startswith", value)

    def endswith(self, value: str) -> Q:
        return self._q("endswith", value)

    def between(self, low: Any, high: Any) -> Q:
        return self._q("range", (low, high))

    def is_(self, value: Any) -> Q:
        if value is not None:
            raise TypeError(f"{self.model}.{self.name}.is_() takes None; use == for values")
        return self._q("isnull", True)

    def is_not(self, value: Any) -> Q:
        if value is not None:
            raise TypeError(f"{self.model}.{self.name}.is_not() takes None; use != for values")
        return self._q("isnull", False)

    def asc(self) -> Any:
        from ormkit.select import Ordering

        return Ordering(self.name)

    def desc(self) -> Any:
        from ormkit.select import Ordering

        return Ordering(f"-{self.name}")

    def __repr__(self) -> str:
        return f"<Column {self.model}.{self.name}>"


_SCALARS: dict[Any, str] = {
    int: "int",
    str: "str",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    _dt.datetime: "datetime",
    _dt.date: "date",
    _dt.time: "time",
    dict: "json",
    list: "json",
}


def _unwrap_mapped(cls_name: str, attr: str, ann: Any) -> Any:
    if typing.get_origin(ann) is Mapped:
        (inner,) = typing.get_args(ann)
        return inner
    raise TypeError(f"{cls_name}.{attr}: annotate columns as Mapped[...] (got {ann!r})")


def _column_type(cls_name: str, attr: str, inner: Any) -> tuple[str, bool]:
    """The engine type name for an annotation, and whether it allows None."""
    nullable = False
    origin = typing.get_origin(inner)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(inner) if a is not type(None)]
        if len(args) != len(typing.get_args(inner)):
            nullable = True
        if len(args) != 1:
            raise TypeError(f"{cls_name}.{attr}: a column holds one type; {inner!r} has several")
        inner = args[0]
        origin = typing.get_origin(inner)
    if origin in (dict, list):
        return "json", nullable
    if inner in _SCALARS:
        return _SCALARS[inner], nullable
    raise TypeError(
        f"{cls_name}.{attr}: unsupported column type {inner!r}; use int, str, float, bool, bytes, "
        "datetime, date, time, dict or list (JSON), optionally | None"
    )


def _resolve(cls: type, attr: str, ann: Any) -> Any:
    if not isinstance(ann, str):
        return ann
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module else {}
    namespace.setdefault("Mapped", Mapped)
    try:
        return eval(ann, namespace, dict(vars(cls)))  # noqa: S307 - annotations of the user's own class
    except Exception as e:
        raise TypeError(f"{cls.__name__}.{attr}: cannot resolve annotation {ann!r}: {e}") from None


def _relation_target(ann: Any) -> tuple[str | None, bool]:
    """The related class name of a relationship annotation, and whether it is a list."""
    if isinstance(ann, str):
        is_list = bool(re.search(r"\b(list|List|set|Set)\[", ann))
        names = [
            t
            for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", ann)
            if t not in ("Mapped", "list", "List", "set", "Set", "Optional", "None", "typing")
        ]
        return (names[-1] if names else None), is_list
    inner = typing.get_args(ann)[0] if typing.get_origin(ann) is Mapped else ann
    is_list = typing.get_origin(inner) in (list, set)
    if is_list:
        inner = typing.get_args(inner)[0]
    origin = typing.get_origin(inner)
    if origin is typing.Union or origin is types.UnionType:
        inner = next(a for a in typing.get_args(inner) if a is not type(None))
    if isinstance(inner, typing.ForwardRef):
        inner = inner.__forward_arg__
    if isinstance(inner, str):
        # A quoted part (``Mapped["list[Post]"]``) says what the whole annotation would.
        name, quoted_list = _relation_target(inner)
        return name, is_list or quoted_list
    return getattr(inner, "__name__", None), is_list


class Base:
    """Base class of every model. A subclass with ``__tablename__`` is a table."""

    __ormkit__: ClassVar[Any]
    __ormkit_fields__: ClassVar[tuple[str, ...]] = ()
    __ormkit_defaults__: ClassVar[dict[str, Any]] = {}
    __ormkit_relations__: ClassVar[dict[str, Relationship]] = {}
    # What __init__ needs, precomputed once per class.
    __ormkit_accepts__: ClassVar[frozenset[str]] = frozenset()
    __ormkit_static_defaults__: ClassVar[dict[str, Any]] = {}
    __ormkit_factories__: ClassVar[tuple[tuple[str, Any], ...]] = ()
    __ormkit_models__: ClassVar[dict[str, type]] = {}
    # Single-object relations noload() left unset on an instance: they read as None, and a
    # value assigned to one (None included) is seen by the next flush.
    _ormkit_noload: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__tablename__" in cls.__dict__:
            _register(cls)

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        if not kwargs.keys() <= cls.__ormkit_accepts__:
            key = sorted(kwargs.keys() - cls.__ormkit_accepts__)[0]
            raise TypeError(
                f"{cls.__name__}() got an unexpected keyword argument {key!r}; "
                f"fields are: {', '.join(cls.__ormkit_fields__)}"
            )
        d = self.__dict__
        d.update(cls.__ormkit_static_defaults__)
        d.update(kwargs)
        for name, make in cls.__ormkit_factories__:
            if name not in kwargs:
                d[name] = make()

    def __repr__(self) -> str:
        d = self.__dict__
        parts = ", ".join(f"{f}={d[f]!r}" for f in type(self).__ormkit_fields__ if f in d)
        return f"{type(self).__name__}({parts})"


def _register(cls: type[Base]) -> None:
    table = cls.__dict__["__tablename__"]
    if not isinstance(table, str):
        raise TypeError(f"{cls.__name__}.__tablename__ must be a str, got {table!r}")
    for base in cls.__mro__[1:]:
        if "__ormkit__" in base.__dict__:
            # Its columns and relationships are already bound to its own table.
            raise TypeError(
                f"{cls.__name__} derives from the model {base.__name__}: a model cannot be the base of "
                f"another table; declare the shared columns on a plain mixin class (or an abstract base "
                f"without __tablename__) and derive both {base.__name__} and {cls.__name__} from it"
            )
    columns: list[dict[str, Any]] = []
    relations: dict[str, Relationship] = {}
    defaults: dict[str, Any] = {}
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        if klass in (object, Base, Generic):
            continue
        for attr, ann in inspect.get_annotations(klass).items():
            if attr.startswith("__") or attr in seen:
                continue
            value = getattr(cls, attr, _MISSING)
            if isinstance(value, Column):
                value = klass.__dict__.get(attr, _MISSING)
            if isinstance(value, Relationship):
                seen.add(attr)
                if value.uselist is not None and not isinstance(value.uselist, bool):
                    raise TypeError(
                        f"{cls.__name__}.{attr}: relationship(uselist=...) takes True or False, got {value.uselist!r}"
                    )
                sec = value.secondary
                if not (sec is None or isinstance(sec, str) or isinstance(getattr(sec, "__tablename__", None), str)):
                    raise TypeError(
                        f"{cls.__name__}.{attr}: relationship(secondary=...) takes the association table's name "
                        f"or its model class, got {sec!r}"
                    )
                target, is_list = _relation_target(ann)
                value.name, value.owner, value.target = attr, cls.__name__, target
                if value.uselist is None:
                    value.uselist = is_list
                relations[attr] = value
                continue
            resolved = _resolve(klass, attr, ann)
            if typing.get_origin(resolved) is ClassVar:
                continue
            seen.add(attr)
            spec = value if isinstance(value, MappedColumn) else MappedColumn()
            if value is not _MISSING and not isinstance(value, (MappedColumn, Column)):
                spec = MappedColumn(default=value)
            inner = _unwrap_mapped(cls.__name__, attr, resolved)
            if isinstance(inner, typing.ForwardRef):  # Mapped["int | None"]
                inner = _resolve(klass, attr, inner.__forward_arg__)
            type_name, ann_nullable = _column_type(cls.__name__, attr, inner)
            if spec.type is not None:
                if (
                    spec.type.name == "json"
                    or type_name == spec.type.name
                    or (spec.type.name in ("bigint",) and type_name == "int")
                    or (spec.type.name in ("datetimetz",) and type_name == "datetime")
                ):
                    type_name = spec.type.name
                else:
                    raise TypeError(
                        f"{cls.__name__}.{attr}: annotation says {type_name} but mapped_column() says {spec.type!r}"
                    )
            nullable = spec.nullable if spec.nullable is not None else ann_nullable
            if spec.primary_key:
                nullable = False
            fk = spec.foreign_key
            columns.append(
                {
                    "name": attr,
                    "type": type_name,
                    "nullable": nullable,
                    "primary_key": spec.primary_key,
                    "autoincrement": spec.autoincrement,
                    "unique": spec.unique,
                    "index": spec.index,
                    "max_length": spec.max_length,
                    "foreign_key": None
                    if fk is None
                    else {"target": fk.target, "ondelete": fk.ondelete, "onupdate": fk.onupdate},
                }
            )
            if spec.default is not _MISSING:
                defaults[attr] = spec.default
            else:
                defaults[attr] = None
    for attr, value in vars(cls).items():
        if isinstance(value, Relationship) and attr not in relations:
            raise TypeError(
                f"{cls.__name__}.{attr} = relationship(...) has no annotation, which names the related model; "
                f"write {attr}: Mapped[list[Other]] = relationship(...) (or Mapped[Other] for a single one)"
            )
    rel_specs = [
        {
            "name": r.name,
            "target": r.target,
            "back_populates": r.back_populates,
            "lazy": r.lazy,
            "uselist": r.uselist,
            "secondary": r.secondary if isinstance(r.secondary, str) else getattr(r.secondary, "__tablename__", None),
            "foreign_keys": r.foreign_keys,
        }
        for r in relations.values()
    ]
    spec = {
        "name": cls.__name__,
        "table": table,
        "columns": columns,
        "relations": rel_specs,
        "soft_delete": getattr(cls, "__ormkit_soft_delete__", None),
    }
    try:
        handle = _ormkit.register_model(cls, spec)
    except Exception as e:
        raise type(e)(str(e)) from None
    cls.__ormkit__ = handle
    cls.__ormkit_fields__ = tuple(c["name"] for c in columns)
    cls.__ormkit_defaults__ = defaults
    cls.__ormkit_relations__ = relations
    cls.__ormkit_accepts__ = frozenset(cls.__ormkit_fields__) | frozenset(relations)
    cls.__ormkit_static_defaults__ = {k: v for k, v in defaults.items() if not callable(v)}
    cls.__ormkit_factories__ = tuple((k, v) for k, v in defaults.items() if callable(v))
    if cls.__init__ is Base.__init__:
        # The same constructor, run by the engine without Python bytecode.
        _ormkit.install_init(
            cls,
            cls.__ormkit_accepts__,
            dict(cls.__ormkit_static_defaults__),
            list(cls.__ormkit_factories__),
            ", ".join(cls.__ormkit_fields__),
        )
    Base.__ormkit_models__[cls.__name__] = cls
    for c in columns:
        setattr(cls, c["name"], Column(c["name"], cls.__name__, c["type"]))
    for name, rel in relations.items():
        setattr(cls, name, rel)
    _learn_attribute_names(cls, [*cls.__ormkit_fields__, *relations, "_ormkit_noload"])


def _learn_attribute_names(cls: type, names: list[str]) -> None:
    """Teaches the class every attribute name its instances hold, before any instance exists.

    CPython keeps an instance's attributes in a compact array (no ``__dict__``) while their
    names are in a table the class shares. That table only learns names from the first few
    instances; after that, an instance setting a name it lacks gets a full dict of its own.
    Objects built first by ``Model(...)`` with no relation set would otherwise leave the
    relation names out, and every object a later load builds would pay for a dict.
    A class with a finalizer is left to learn them the usual way: the throwaway instance
    would run the user's ``__del__``.
    """
    if getattr(cls, "__del__", None) is not None:
        return
    probe = object.__new__(cls)
    for name in names:
        object.__setattr__(probe, name, None)
    del probe


class SoftDeleteMixin:
    """Makes a model soft-deletable: ``session.soft_delete(obj)`` sets ``deleted_at`` (UTC)
    instead of deleting the row, and queries, ``get``, counts, aggregates and eager loads
    leave such rows out unless asked with ``with_deleted()`` / ``only_deleted()``.
    ``restore`` clears ``deleted_at``; ``force_delete`` deletes the row. Bulk
    ``query(...).delete()`` deletes (really) the rows the query sees."""

    __ormkit_soft_delete__: ClassVar[str] = "deleted_at"

    deleted_at: Mapped[_dt.datetime | None] = mapped_column(nullable=True, index=True)
