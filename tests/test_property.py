"""Property test: random rows and random filter / Q trees against an independent oracle.

The oracle evaluates the filter tree in plain Python with SQL's three-valued logic
(True / False / None for "unknown"); a row is returned only when the whole WHERE clause is
True. The engine's answer (``query.all()`` ids and ``query.count()``) must equal it exactly.

Semantics the oracle encodes (the lookups of ../shared/spec/ormkit-readme.md, issue 2):
- a comparison with NULL is unknown; NOT unknown is unknown; AND / OR per SQL truth tables;
- ``field=None`` is IS NULL, ``field__ne=None`` is IS NOT NULL, ``isnull`` is two-valued;
- ``x IN (..)``: True on a match, else unknown if x or any list item is NULL, else False;
  ``x IN ()`` is False and ``x NOT IN ()`` is True, even for a NULL x;
- ``range`` is BETWEEN, inclusive on both ends;
- ``like`` / ``ilike`` take a raw pattern (``%`` any run, ``_`` one character). On SQLite both
  are ASCII case-insensitive; on PostgreSQL ``like`` is case-sensitive and ``ilike`` is not;
- contains / startswith / endswith are case-sensitive on every backend and take the value
  literally (``% _ * ? [ ] \\`` are plain characters); the ``i`` variants and ``iexact`` are
  ASCII case-insensitive (their generated values are ASCII only, so backends agree);
- ``exclude(...)`` is ``NOT (...)`` (so a NULL comparison inside stays unknown and the row is
  not returned).

Hypothesis runs in a worker thread; each example's database work is submitted back to the
test's event loop (``run_coroutine_threadsafe``), so the engine only ever runs on the loop it
was created on and failing examples still shrink to a minimal case.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ormkit import AsyncSession, Base, Mapped, Q, mapped_column


class PRow(Base):
    __tablename__ = "p_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int | None] = mapped_column(nullable=True)
    s: Mapped[str | None] = mapped_column(nullable=True)
    flag: Mapped[bool | None] = mapped_column(nullable=True)
    k: Mapped[int] = mapped_column()


FIELDS = ("n", "s", "flag", "k")

# --------------------------------------------------------------------------------------
# The filter AST (independent of ormkit.Q, so the oracle never looks inside a Q)
#
#   Leaf(field, lookup, value)           lookup "" is the bare form ``field=value``
#   QNode(args: tuple[node], leaves)     -> Q(*args, **{leaf.key: leaf.value})   (AND)
#   And(a, b) / Or(a, b) / Not(a)        -> a & b / a | b / ~a
#   Step(kind, args, leaves)             -> .filter(*args, **kw) or .exclude(*args, **kw)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    field: str
    lookup: str
    value: Any

    @property
    def key(self) -> str:
        return self.field if not self.lookup else f"{self.field}__{self.lookup}"

    def src(self) -> str:
        return f"{self.key}={self.value!r}"


@dataclass(frozen=True)
class QNode:
    args: tuple
    leaves: tuple


@dataclass(frozen=True)
class And:
    a: Any
    b: Any


@dataclass(frozen=True)
class Or:
    a: Any
    b: Any


@dataclass(frozen=True)
class Not:
    a: Any


@dataclass(frozen=True)
class Step:
    kind: str  # "filter" | "exclude"
    args: tuple
    leaves: tuple


def to_q(node: Any) -> Q:
    if isinstance(node, QNode):
        return Q(*(to_q(a) for a in node.args), **{lf.key: lf.value for lf in node.leaves})
    if isinstance(node, And):
        return to_q(node.a) & to_q(node.b)
    if isinstance(node, Or):
        return to_q(node.a) | to_q(node.b)
    if isinstance(node, Not):
        return ~to_q(node.a)
    raise TypeError(node)


def src(node: Any) -> str:
    """Python source that rebuilds the node, for failure messages."""
    if isinstance(node, QNode):
        return "Q(" + ", ".join([*(src(a) for a in node.args), *(lf.src() for lf in node.leaves)]) + ")"
    if isinstance(node, And):
        return f"({src(node.a)} & {src(node.b)})"
    if isinstance(node, Or):
        return f"({src(node.a)} | {src(node.b)})"
    if isinstance(node, Not):
        return f"~{src(node.a)}"
    raise TypeError(node)


def steps_src(steps: tuple) -> str:
    out = "session.query(PRow)"
    for st_ in steps:
        parts = [*(src(a) for a in st_.args), *(lf.src() for lf in st_.leaves)]
        out += f".{st_.kind}({', '.join(parts)})"
    return out


def build_query(session: AsyncSession, steps: tuple):
    q = session.query(PRow)
    for st_ in steps:
        args = [to_q(a) for a in st_.args]
        kw = {lf.key: lf.value for lf in st_.leaves}
        q = q.filter(*args, **kw) if st_.kind == "filter" else q.exclude(*args, **kw)
    return q


# --------------------------------------------------------------------------------------
# The oracle: SQL three-valued logic in Python
# --------------------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    return s.translate(_ASCII_LOWER)


def like_match(value: str, pattern: str) -> bool:
    """SQL LIKE without escapes: ``%`` matches any run (also empty), ``_`` one character."""
    n, m = len(value), len(pattern)
    # dp[j]: pattern[:j] matches value[:i]
    dp = [False] * (m + 1)
    dp[0] = True
    for j in range(1, m + 1):
        dp[j] = dp[j - 1] and pattern[j - 1] == "%"
    for i in range(1, n + 1):
        new = [False] * (m + 1)
        for j in range(1, m + 1):
            p = pattern[j - 1]
            if p == "%":
                new[j] = new[j - 1] or dp[j]
            elif p == "_" or p == value[i - 1]:
                new[j] = dp[j - 1]
        dp = new
    return dp[m]


def and3(values) -> bool | None:
    vals = list(values)
    if any(v is False for v in vals):
        return False
    if any(v is None for v in vals):
        return None
    return True


def or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def not3(a: bool | None) -> bool | None:
    return None if a is None else not a


def in3(x: Any, items: list) -> bool | None:
    if not items:
        return False
    if x is None:
        return None
    if any(i is not None and i == x for i in items):
        return True
    if any(i is None for i in items):
        return None
    return False


def eval_leaf(leaf: Leaf, row: dict, dialect: str) -> bool | None:
    x = row[leaf.field]
    lk, v = leaf.lookup, leaf.value
    if lk in ("", "exact") and v is None:
        return x is None
    if lk == "ne" and v is None:
        return x is not None
    if lk == "isnull":
        return (x is None) == bool(v)
    if lk == "in":
        return in3(x, list(v))
    if lk == "notin":
        return True if not v else not3(in3(x, list(v)))
    if x is None:
        return None
    if lk in ("", "exact"):
        return x == v
    if lk == "ne":
        return x != v
    if lk == "gt":
        return x > v
    if lk == "gte":
        return x >= v
    if lk == "lt":
        return x < v
    if lk == "lte":
        return x <= v
    if lk == "range":
        lo, hi = v
        return lo <= x <= hi
    if lk == "like":
        if dialect == "sqlite":  # SQLite's LIKE is ASCII case-insensitive
            return like_match(ascii_lower(x), ascii_lower(v))
        return like_match(x, v)
    if lk == "ilike":
        return like_match(ascii_lower(x), ascii_lower(v))
    if lk == "contains":
        return v in x
    if lk == "startswith":
        return x.startswith(v)
    if lk == "endswith":
        return x.endswith(v)
    if lk == "icontains":
        return ascii_lower(v) in ascii_lower(x)
    if lk == "istartswith":
        return ascii_lower(x).startswith(ascii_lower(v))
    if lk == "iendswith":
        return ascii_lower(x).endswith(ascii_lower(v))
    if lk == "iexact":
        return ascii_lower(x) == ascii_lower(v)
    raise AssertionError(f"oracle has no lookup {lk!r}")


def eval_node(node: Any, row: dict, dialect: str) -> bool | None:
    if isinstance(node, QNode):
        return and3(
            [*(eval_node(a, row, dialect) for a in node.args), *(eval_leaf(lf, row, dialect) for lf in node.leaves)]
        )
    if isinstance(node, And):
        return and3([eval_node(node.a, row, dialect), eval_node(node.b, row, dialect)])
    if isinstance(node, Or):
        return or3(eval_node(node.a, row, dialect), eval_node(node.b, row, dialect))
    if isinstance(node, Not):
        return not3(eval_node(node.a, row, dialect))
    raise TypeError(node)


def eval_steps(steps: tuple, row: dict, dialect: str) -> bool | None:
    results = []
    for st_ in steps:
        cond = and3(
            [*(eval_node(a, row, dialect) for a in st_.args), *(eval_leaf(lf, row, dialect) for lf in st_.leaves)]
        )
        results.append(cond if st_.kind == "filter" else not3(cond))
    return and3(results)


def expected_ids(steps: tuple, rows: list[dict], dialect: str) -> list[int]:
    return sorted(r["id"] for r in rows if eval_steps(steps, r, dialect) is True)


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

# Row strings: tricky characters for LIKE / GLOB, both cases, and a non-ASCII pair. Plain
# letters are drawn more often so comparisons and patterns hit real rows.
ROW_ALPHABET = "aAbB%_*?[]\\ éÉ"
# Case-insensitive comparands stay ASCII so SQLite (ASCII folding) and PostgreSQL agree.
ASCII_ALPHABET = "aAbB%_*?[]\\ "
LIKE_ALPHABET = "aAbB%_"


def _chars(alphabet: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from("aAb"), st.sampled_from(alphabet))


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``common`` about three times in four. (``st.one_of`` does not weight its branches
    evenly, so repeating a branch there does not shift the odds.)"""
    return st.sampled_from([True, True, True, False]).flatmap(lambda c: common if c else rare)


small_ints = mostly(st.integers(-2, 2), st.integers(-1000, 1000))
row_text = st.text(alphabet=_chars(ROW_ALPHABET), max_size=4)
cmp_text = st.text(alphabet=_chars(ROW_ALPHABET), max_size=2)
ascii_text = st.text(alphabet=_chars(ASCII_ALPHABET), max_size=2)
like_pattern = st.text(alphabet=LIKE_ALPHABET, max_size=4)
bools = st.booleans()


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return mostly(strategy, st.none())  # about one NULL in four


COMMON = ("", "exact", "ne", "gt", "gte", "lt", "lte", "in", "notin", "isnull", "range")
STR_ONLY = ("like", "ilike", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith", "iexact")
ORDERING = ("gt", "gte", "lt", "lte", "range")


def value_strategy(field: str, lookup: str) -> st.SearchStrategy:
    base = {"n": small_ints, "k": small_ints, "s": cmp_text, "flag": bools}[field]
    if lookup == "isnull":
        return bools
    if lookup in ("", "ne"):
        return nullable(base)  # None means IS NULL / IS NOT NULL
    if lookup in ("in", "notin"):
        return st.lists(nullable(base), max_size=4)
    if lookup == "range":
        pair = st.tuples(base, base)
        return st.one_of(pair.map(lambda p: tuple(sorted(p))), pair)  # lo > hi is legal too
    if lookup in ("like", "ilike"):
        return like_pattern
    if lookup in ("icontains", "istartswith", "iendswith", "iexact"):
        return ascii_text
    return base  # exact, gt, gte, lt, lte, contains, startswith, endswith


def lookups_for(field: str, dialect: str) -> tuple[str, ...]:
    if field != "s":
        return COMMON
    ops = COMMON + STR_ONLY
    if dialect != "sqlite":
        # String ordering depends on the database collation on PostgreSQL (en_US is not
        # code-point order); the oracle only knows code-point order, which SQLite uses.
        ops = tuple(o for o in ops if o not in ORDERING)
    return ops


def leaf_strategy(dialect: str) -> st.SearchStrategy[Leaf]:
    pairs = [(f, lk) for f in FIELDS for lk in lookups_for(f, dialect)]
    return st.sampled_from(pairs).flatmap(lambda p: value_strategy(*p).map(lambda v: Leaf(p[0], p[1], v)))


def leaves_strategy(dialect: str, min_size: int, max_size: int = 2) -> st.SearchStrategy[tuple]:
    # kwargs need distinct keys
    return st.lists(leaf_strategy(dialect), min_size=min_size, max_size=max_size, unique_by=lambda lf: lf.key).map(
        tuple
    )


def tree_strategy(dialect: str) -> st.SearchStrategy:
    leaf_q = leaves_strategy(dialect, 1).map(lambda lvs: QNode((), lvs))

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.builds(And, children, children),
            st.builds(Or, children, children),
            st.builds(Not, children),
            # Q(q1, q2, field=...) : positional Qs AND keyword lookups
            st.builds(
                QNode,
                st.lists(children, min_size=1, max_size=2).map(tuple),
                leaves_strategy(dialect, 0),
            ),
        )

    return st.recursive(leaf_q, extend, max_leaves=5)


def steps_strategy(dialect: str) -> st.SearchStrategy[tuple]:
    tree = tree_strategy(dialect)
    kind = st.sampled_from(["filter", "filter", "exclude"])
    step = st.one_of(
        st.builds(Step, kind, tree.map(lambda x: (x,)), st.just(())),  # .filter(tree)
        st.builds(Step, kind, st.just(()), leaves_strategy(dialect, 1)),  # .filter(a=.., b=..)
        st.builds(  # .filter(tree1, tree2, a=..)
            Step, kind, st.lists(tree, max_size=2).map(tuple), leaves_strategy(dialect, 0)
        ).filter(lambda s: s.args or s.leaves),
    )
    # usually one filter()/exclude() call, sometimes a chain of two
    return mostly(step.map(lambda s: (s,)), st.tuples(step, step))


row_strategy = st.fixed_dictionaries(
    {"n": nullable(small_ints), "s": nullable(row_text), "flag": nullable(bools), "k": small_ints}
)
# 0-15 rows; the size is drawn explicitly because st.lists favours very short lists
rows_strategy = st.integers(0, 15).flatmap(lambda size: st.lists(row_strategy, min_size=size, max_size=size))


# --------------------------------------------------------------------------------------
# Running one example against the database
# --------------------------------------------------------------------------------------


async def load_rows(session: AsyncSession, rows: list[dict]) -> list[dict]:
    await session.query(PRow).delete()
    if not rows:
        return []
    objs = await session.insert_all([PRow(**r) for r in rows])
    return [{"id": o.id, **r} for o, r in zip(objs, rows, strict=True)]


async def check_example(session: AsyncSession, rows: list[dict], steps: tuple) -> None:
    dialect = session.engine.dialect
    stored = await load_rows(session, rows)
    query = build_query(session, steps)
    want = expected_ids(steps, stored, dialect)
    got = sorted(o.id for o in await query.all())
    count = await query.count()
    if got != want or count != len(want):
        raise AssertionError(
            "filter result differs from the SQL three-valued-logic oracle\n"
            f"  dialect:  {dialect}\n"
            f"  rows:     {stored!r}\n"
            f"  query:    {steps_src(steps)}\n"
            f"  sql:      {query.sql()}\n"
            f"  expected: {want}\n"
            f"  all():    {got}\n"
            f"  count():  {count}"
        )


async def test_filters_match_oracle(engine):
    session = AsyncSession(engine)
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(rows=rows_strategy, steps=steps_strategy(engine.dialect))
    def prop(rows: list[dict], steps: tuple) -> None:
        # runs in a worker thread; the database work runs on the test's loop
        fut = asyncio.run_coroutine_threadsafe(check_example(session, rows, steps), loop)
        fut.result(timeout=60)

    await asyncio.to_thread(prop)


# --------------------------------------------------------------------------------------
# Hand-written regressions (each also checked against the oracle)
# --------------------------------------------------------------------------------------

REG_ROWS = [
    {"n": 1, "s": "abc", "flag": True, "k": 1},
    {"n": None, "s": None, "flag": None, "k": 2},
    {"n": 2, "s": "a%c", "flag": False, "k": 3},
    {"n": 3, "s": "A_C", "flag": None, "k": 4},
    {"n": None, "s": "x*y?[z]", "flag": True, "k": 5},
    {"n": 2, "s": "", "flag": False, "k": 6},
]


async def _check(session: AsyncSession, *steps: Step) -> list[int]:
    await check_example(session, REG_ROWS, tuple(steps))
    stored = await session.query(PRow).order_by("id").all()
    by_k = {o.id: o.k for o in stored}
    got = await build_query(session, tuple(steps)).all()
    return sorted(by_k[o.id] for o in got)  # results named by k, independent of ids


def flt(*args: Any, **kw: Any) -> Step:
    return Step("filter", args, tuple(Leaf(*_split(k), v) for k, v in kw.items()))


def exc(*args: Any, **kw: Any) -> Step:
    return Step("exclude", args, tuple(Leaf(*_split(k), v) for k, v in kw.items()))


def qn(*args: Any, **kw: Any) -> QNode:
    return QNode(args, tuple(Leaf(*_split(k), v) for k, v in kw.items()))


def _split(key: str) -> tuple[str, str]:
    field, _, lookup = key.partition("__")
    return field, lookup


async def test_not_over_null_is_unknown(session):
    # NOT (n > 1): rows with n NULL stay out, rows with n <= 1 are in
    assert await _check(session, flt(Not(qn(n__gt=1)))) == [1]
    # exclude is NOT (...) as well
    assert await _check(session, exc(n__gt=1)) == [1]
    # NOT (flag = True) does not return NULL flags
    assert await _check(session, flt(Not(qn(flag=True)))) == [3, 6]
    # but an OR with a TRUE branch rescues the unknown
    assert await _check(session, flt(Or(Not(qn(n__gt=1)), qn(n__isnull=True)))) == [1, 2, 5]


async def test_not_in_with_null_in_list(session):
    # n NOT IN (1, NULL) is never TRUE
    assert await _check(session, flt(n__notin=[1, None])) == []
    assert await _check(session, flt(Not(qn(n__in=[1, None])))) == []
    # n IN (1, NULL) is TRUE only for n = 1
    assert await _check(session, flt(n__in=[1, None])) == [1]
    assert await _check(session, flt(n__in=[None])) == []


async def test_empty_in_and_not_in_lists(session):
    assert await _check(session, flt(n__in=[])) == []
    # NOT IN () is TRUE for every row, NULL included
    assert await _check(session, flt(n__notin=[])) == [1, 2, 3, 4, 5, 6]
    assert await _check(session, flt(s__notin=[])) == [1, 2, 3, 4, 5, 6]
    # NOT (x IN ()) is TRUE too
    assert await _check(session, flt(Not(qn(n__in=[])))) == [1, 2, 3, 4, 5, 6]
    assert await _check(session, exc(n__notin=[])) == []


async def test_contains_takes_wildcards_literally(session):
    assert await _check(session, flt(s__contains="%")) == [3]
    assert await _check(session, flt(s__contains="_")) == [4]
    assert await _check(session, flt(s__contains="*")) == [5]
    assert await _check(session, flt(s__contains="?[")) == [5]
    assert await _check(session, flt(s__startswith="a%")) == [3]
    assert await _check(session, flt(s__endswith="[z]")) == [5]
    assert await _check(session, flt(s__icontains="_c")) == [4]
    assert await _check(session, flt(s__iexact="a_c")) == [4]
    # case-sensitive on every backend
    assert await _check(session, flt(s__contains="A")) == [4]
    assert await _check(session, flt(s__contains="")) == [1, 3, 4, 5, 6]


async def test_like_patterns(session):
    # like: _ and % are wildcards; case rule depends on the backend
    got = await _check(session, flt(s__like="a_c"))
    assert got == ([1, 3, 4] if session.engine.dialect == "sqlite" else [1, 3])
    assert await _check(session, flt(s__ilike="a_c")) == [1, 3, 4]
    assert await _check(session, flt(s__like="%")) == [1, 3, 4, 5, 6]


async def test_none_means_is_null(session):
    assert await _check(session, flt(n=None)) == [2, 5]
    assert await _check(session, flt(n__ne=None)) == [1, 3, 4, 6]
    assert await _check(session, flt(flag__ne=True)) == [3, 6]
    assert await _check(session, flt(n__range=(2, 3))) == [3, 4, 6]
