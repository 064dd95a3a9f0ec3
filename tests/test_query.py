"""Query builder behaviour against a real database: every filter operator, JSON path lookups,
Q trees, ordering, paging, grouping, aggregates, terminal methods and immutability.

Every test seeds its own rows with ``session.insert_all`` and asserts the rows that come back.
Where the order of the result is not specified, results are compared as sets / sorted lists.
"""

from __future__ import annotations

import pytest

from ormkit import Q
from tests.models import Order, User

# ---------------------------------------------------------------------------------------------
# seed data
# ---------------------------------------------------------------------------------------------
#
#   name    age   role    vip    metadata
#   Alice   30    admin   True   plan=premium score=7   ratio=1.5 active=true  settings.theme=dark
#                                settings.lang=en  settings.ui.density=compact  name="Alice Wonderland"
#                                nick=null
#   bob     17    member  False  plan=free    score=3   ratio=0.5 active=false settings.theme=light
#                                name="BOBBY"  nick="bobster"
#   Carol   None  mod     False  plan=premium score="7" (a string)  settings.theme=dark
#                                settings.ui.density=cozy
#   dave    65    member  True   {}
#   Eve     18    guest   False  score=10  ratio=2.0  active=1 (a number, not a bool)  plan=null


def _users() -> list[User]:
    return [
        User(
            name="Alice",
            email="alice@example.com",
            age=30,
            role="admin",
            vip=True,
            metadata={
                "plan": "premium",
                "score": 7,
                "ratio": 1.5,
                "active": True,
                "settings": {"theme": "dark", "lang": "en", "ui": {"density": "compact"}},
                "name": "Alice Wonderland",
                "nick": None,
            },
        ),
        User(
            name="bob",
            email="bob@example.com",
            age=17,
            role="member",
            vip=False,
            metadata={
                "plan": "free",
                "score": 3,
                "ratio": 0.5,
                "active": False,
                "settings": {"theme": "light"},
                "name": "BOBBY",
                "nick": "bobster",
            },
        ),
        User(
            name="Carol",
            email="carol@example.com",
            age=None,
            role="mod",
            vip=False,
            metadata={"plan": "premium", "score": "7", "settings": {"theme": "dark", "ui": {"density": "cozy"}}},
        ),
        User(name="dave", email="dave@example.org", age=65, role="member", vip=True, metadata={}),
        User(
            name="Eve",
            email="eve@example.org",
            age=18,
            role="guest",
            vip=False,
            metadata={"score": 10, "ratio": 2.0, "active": 1, "plan": None},
        ),
    ]


ALL = {"Alice", "bob", "Carol", "dave", "Eve"}


@pytest.fixture
async def users(session) -> dict[str, User]:
    inserted = await session.insert_all(_users())
    return {u.name: u for u in inserted}


def _orders() -> list[Order]:
    return [
        Order(status="completed", amount=10.0, quantity=1),
        Order(status="completed", amount=20.0, quantity=2),
        Order(status="completed", amount=30.5, quantity=3),
        Order(status="pending", amount=5.0, quantity=1),
        Order(status="cancelled", amount=7.5, quantity=2),
        Order(status="cancelled", amount=2.5, quantity=1),
    ]


@pytest.fixture
async def orders(session) -> list[Order]:
    return await session.insert_all(_orders())


async def names(query) -> set[str]:
    return {u.name for u in await query.all()}


# ---------------------------------------------------------------------------------------------
# filter operators: every row of the spec's table, plus exact/iexact/istartswith/iendswith/range
# ---------------------------------------------------------------------------------------------

OPERATOR_CASES = [
    # (none) / exact
    ({"name": "Alice"}, {"Alice"}),
    ({"name": "alice"}, set()),
    ({"name__exact": "bob"}, {"bob"}),
    ({"name__exact": "Bob"}, set()),
    ({"age": 18}, {"Eve"}),
    ({"vip": True}, {"Alice", "dave"}),
    ({"vip": False}, {"bob", "Carol", "Eve"}),
    # comparisons (NULL age never matches)
    ({"age__gt": 18}, {"Alice", "dave"}),
    ({"age__gte": 18}, {"Alice", "dave", "Eve"}),
    ({"age__lt": 18}, {"bob"}),
    ({"age__lte": 18}, {"bob", "Eve"}),
    ({"age__ne": 30}, {"bob", "dave", "Eve"}),
    ({"role__ne": "member"}, {"Alice", "Carol", "Eve"}),
    ({"age__gt": 100}, set()),
    # IN / NOT IN
    ({"role__in": ["admin", "mod"]}, {"Alice", "Carol"}),
    ({"role__in": ("guest",)}, {"Eve"}),
    ({"role__in": ["nobody"]}, set()),
    ({"role__notin": ["admin", "mod"]}, {"bob", "dave", "Eve"}),
    ({"age__in": [17, 65]}, {"bob", "dave"}),
    ({"age__notin": [17, 65]}, {"Alice", "Eve"}),  # NULL NOT IN (...) is unknown
    # LIKE / ILIKE take raw patterns (patterns chosen so LIKE's case rules don't matter)
    ({"name__like": "%o%"}, {"bob", "Carol"}),
    ({"name__like": "_ave"}, {"dave"}),
    ({"name__like": "%e"}, {"Alice", "dave", "Eve"}),
    ({"email__like": "%@example.org"}, {"dave", "Eve"}),
    ({"name__ilike": "a%"}, {"Alice"}),
    ({"name__ilike": "CAR%"}, {"Carol"}),
    ({"name__ilike": "%V%"}, {"dave", "Eve"}),
    # contains / startswith / endswith: case-sensitive
    ({"name__contains": "o"}, {"bob", "Carol"}),
    ({"name__contains": "lic"}, {"Alice"}),
    ({"name__contains": "LIC"}, set()),
    ({"name__contains": "ve"}, {"dave", "Eve"}),
    ({"name__icontains": "LIC"}, {"Alice"}),
    ({"name__icontains": "e"}, {"Alice", "dave", "Eve"}),
    ({"name__icontains": "B"}, {"bob"}),
    ({"name__startswith": "A"}, {"Alice"}),
    ({"name__startswith": "a"}, set()),
    ({"name__startswith": "Ca"}, {"Carol"}),
    ({"name__istartswith": "a"}, {"Alice"}),
    ({"name__istartswith": "E"}, {"Eve"}),
    ({"name__istartswith": "BO"}, {"bob"}),
    ({"name__endswith": "e"}, {"Alice", "dave", "Eve"}),
    ({"name__endswith": "E"}, set()),
    ({"name__endswith": "ol"}, {"Carol"}),
    ({"name__iendswith": "E"}, {"Alice", "dave", "Eve"}),
    ({"name__iendswith": "OB"}, {"bob"}),
    # iexact
    ({"name__iexact": "BOB"}, {"bob"}),
    ({"name__iexact": "alice"}, {"Alice"}),
    ({"name__iexact": "ali"}, set()),
    # isnull / None
    ({"age__isnull": True}, {"Carol"}),
    ({"age__isnull": False}, {"Alice", "bob", "dave", "Eve"}),
    ({"age": None}, {"Carol"}),
    ({"age__exact": None}, {"Carol"}),
    ({"age__ne": None}, {"Alice", "bob", "dave", "Eve"}),
    # range is inclusive on both ends
    ({"age__range": (17, 30)}, {"Alice", "bob", "Eve"}),
    ({"age__range": [18, 18]}, {"Eve"}),
    ({"age__range": (31, 64)}, set()),
    ({"email__range": ("c", "e")}, {"Carol", "dave"}),  # "eve@..." > "e"
    # several lookups in one filter() are ANDed
    ({"age__gte": 18, "age__lt": 65}, {"Alice", "Eve"}),
    ({"vip": True, "role": "member"}, {"dave"}),
]


async def check_cases(query, cases) -> list[str]:
    """Runs every (lookups, expected names) case against ``query``; returns the mismatches, so
    one test reports every failing case at once."""
    bad = []
    for lookups, expected in cases:
        try:
            got = await names(query.filter(**lookups))
        except Exception as e:
            got = f"{type(e).__name__}: {e}"
        if got != expected:
            args = ", ".join(f"{k}={v!r}" for k, v in lookups.items())
            bad.append(f"filter({args}): got {got!r}, expected {expected!r}")
    return bad


async def test_filter_operators(session, users):
    """Every case of OPERATOR_CASES; the assertion lists every mismatching case."""
    assert await check_cases(session.query(User), OPERATOR_CASES) == []


def test_every_operator_of_the_spec_has_cases():
    """Every lookup of the spec's Filter Operators table (and the extra ones) has a case."""
    used = {k.split("__")[1] if "__" in k else "(none)" for c in OPERATOR_CASES for k in c[0]}
    spec = {"(none)", "gt", "gte", "lt", "lte", "ne", "in", "notin", "like", "ilike", "contains", "icontains"}
    spec |= {"startswith", "endswith", "isnull", "exact", "iexact", "istartswith", "iendswith", "range"}
    assert spec <= used


async def test_filter_results_floats_and_empty_in(session, users, orders):
    rows = await session.query(User).filter(name="Alice").all()
    assert len(rows) == 1
    alice = rows[0]
    assert isinstance(alice, User)
    assert alice.id == users["Alice"].id
    assert (alice.email, alice.age, alice.role, alice.vip) == ("alice@example.com", 30, "admin", True)
    assert alice.metadata["settings"] == {"theme": "dark", "lang": "en", "ui": {"density": "compact"}}

    # float column; empty IN lists
    q = session.query(Order)
    assert sorted(o.amount for o in await q.filter(amount__gt=7.5).all()) == [10.0, 20.0, 30.5]
    assert sorted(o.amount for o in await q.filter(amount__gte=7.5).all()) == [7.5, 10.0, 20.0, 30.5]
    assert sorted(o.amount for o in await q.filter(amount__lt=6).all()) == [2.5, 5.0]
    assert sorted(o.amount for o in await q.filter(amount__range=(5, 10)).all()) == [5.0, 7.5, 10.0]
    assert [o.amount for o in await q.filter(amount=30.5).all()] == [30.5]
    q = session.query(User)
    assert await names(q.filter(role__in=[])) == set()
    assert await names(q.filter(role__notin=[])) == ALL


# ---------------------------------------------------------------------------------------------
# JSON path lookups
# ---------------------------------------------------------------------------------------------

JSON_CASES = [
    # strings
    ({"metadata__plan": "premium"}, {"Alice", "Carol"}, "str"),
    ({"metadata__plan": "free"}, {"bob"}, "str"),
    ({"metadata__plan": "Premium"}, set(), "str"),
    ({"metadata__plan__ne": "premium"}, {"bob"}, "str"),  # missing / JSON null never compare
    ({"metadata__plan__in": ["free", "premium"]}, {"Alice", "bob", "Carol"}, "str"),
    ({"metadata__plan__startswith": "pre"}, {"Alice", "Carol"}, "str"),
    ({"metadata__plan__contains": "re"}, {"Alice", "bob", "Carol"}, "str"),
    # nested keys
    ({"metadata__settings__theme": "dark"}, {"Alice", "Carol"}, "nested"),
    ({"metadata__settings__theme": "light"}, {"bob"}, "nested"),
    ({"metadata__settings__lang": "en"}, {"Alice"}, "nested"),
    ({"metadata__settings__ui__density": "compact"}, {"Alice"}, "nested"),
    ({"metadata__settings__ui__density__in": ["compact", "cozy"]}, {"Alice", "Carol"}, "nested"),
    ({"metadata__settings__missing": "x"}, set(), "nested"),
    ({"metadata__nothere": "premium"}, set(), "nested"),
    ({"metadata__plan__deeper": "x"}, set(), "nested"),  # path through a string value
    # ints: only JSON numbers match (Carol's "7" is a string)
    ({"metadata__score": 7}, {"Alice"}, "int"),
    ({"metadata__score__gt": 5}, {"Alice", "Eve"}, "int"),
    ({"metadata__score__gte": 7}, {"Alice", "Eve"}, "int"),
    ({"metadata__score__lt": 7}, {"bob"}, "int"),
    ({"metadata__score__lte": 7}, {"Alice", "bob"}, "int"),
    ({"metadata__score__ne": 7}, {"bob", "Eve"}, "int"),
    ({"metadata__score__in": [3, 10]}, {"bob", "Eve"}, "int"),
    ({"metadata__score__range": (3, 7)}, {"Alice", "bob"}, "int"),
    # strings do not equal numbers and vice versa
    ({"metadata__score": "7"}, {"Carol"}, "strict"),
    ({"metadata__score__gt": "5"}, {"Carol"}, "strict"),
    # floats (a JSON number is a number, int or float)
    ({"metadata__ratio__gt": 1.0}, {"Alice", "Eve"}, "float"),
    ({"metadata__ratio": 1.5}, {"Alice"}, "float"),
    ({"metadata__ratio": 2}, {"Eve"}, "float"),
    ({"metadata__ratio__lte": 0.5}, {"bob"}, "float"),
    ({"metadata__score__gt": 6.5}, {"Alice", "Eve"}, "float"),
    ({"metadata__score": 7.0}, {"Alice"}, "float"),
    # bools: only JSON true/false match (Eve's active=1 is a number)
    ({"metadata__active": True}, {"Alice"}, "bool"),
    ({"metadata__active": False}, {"bob"}, "bool"),
    ({"metadata__active": 1}, {"Eve"}, "bool"),
    # isnull: missing key or JSON null
    ({"metadata__plan__isnull": True}, {"dave", "Eve"}, "isnull"),
    ({"metadata__plan__isnull": False}, {"Alice", "bob", "Carol"}, "isnull"),
    ({"metadata__nick__isnull": True}, {"Alice", "Carol", "dave", "Eve"}, "isnull"),
    ({"metadata__nick__isnull": False}, {"bob"}, "isnull"),
    ({"metadata__settings__lang__isnull": False}, {"Alice"}, "isnull"),
    ({"metadata__plan": None}, {"dave", "Eve"}, "isnull"),
    # case-insensitive string lookups on JSON strings
    ({"metadata__name__icontains": "bob"}, {"bob"}, "istr"),
    ({"metadata__name__icontains": "WONDER"}, {"Alice"}, "istr"),
    ({"metadata__name__contains": "WONDER"}, set(), "istr"),
    ({"metadata__name__iexact": "bobby"}, {"bob"}, "istr"),
    ({"metadata__name__istartswith": "alice w"}, {"Alice"}, "istr"),
    # JSON lookups combine with column lookups
    ({"metadata__plan": "premium", "age__isnull": True}, {"Carol"}, "combo"),
]


async def test_json_path_lookups(session, users):
    """Every case of JSON_CASES (strings, nested keys, ints, floats, type strictness, bools,
    isnull, case-insensitive lookups); the assertion lists every mismatching case."""
    assert await check_cases(session.query(User), [c[:2] for c in JSON_CASES]) == []


async def test_json_lookups_in_q_exclude_and_values(session, users):
    q = session.query(User)
    assert await names(q.filter(Q(metadata__plan="free") | Q(metadata__score=10))) == {"bob", "Eve"}
    # NOT of unknown stays unknown: rows without a plan are not returned by the exclude either
    assert await names(q.exclude(metadata__plan="premium")) == {"bob"}
    assert await names(q.filter(~Q(metadata__settings__theme="dark"))) == {"bob"}

    # JSON values come back as Python objects
    rows = await session.query(User).filter(metadata__score__gt=5).order_by("id").values("name", "metadata")
    assert [r["name"] for r in rows] == ["Alice", "Eve"]
    assert rows[1]["metadata"] == {"score": 10, "ratio": 2.0, "active": 1, "plan": None}


# ---------------------------------------------------------------------------------------------
# Q objects
# ---------------------------------------------------------------------------------------------


async def test_q_or_and_not_and_three_valued_logic(session, users):
    q = session.query(User)
    assert await names(q.filter(Q(age__gt=18) | Q(vip=True))) == {"Alice", "dave"}
    assert await names(q.filter(Q(age__lt=18) | Q(role="mod"))) == {"bob", "Carol"}
    assert await names(q.filter(Q(age__gte=18) & Q(vip=False))) == {"Eve"}
    assert await names(q.filter(~Q(role="member"))) == {"Alice", "Carol", "Eve"}
    # Q(...) with several lookups ANDs them
    assert await names(q.filter(Q(role="member", vip=True))) == {"dave"}
    # Q and keyword lookups in the same filter() are ANDed
    assert await names(q.filter(Q(role="member") | Q(role="admin"), vip=True)) == {"Alice", "dave"}
    # several Q arguments are ANDed
    assert await names(q.filter(Q(age__gte=17), Q(age__lte=18))) == {"bob", "Eve"}

    # three-valued logic
    q = session.query(User)
    # Carol's age is NULL: age > 18 is unknown, and NOT unknown is unknown
    assert await names(q.filter(~Q(age__gt=18))) == {"bob", "Eve"}
    assert await names(q.filter(~Q(age__in=[17, 18]))) == {"Alice", "dave"}
    assert await names(q.filter(~Q(age__gt=18) | Q(age__isnull=True))) == {"bob", "Eve", "Carol"}
    # unknown OR true is true
    assert await names(q.filter(Q(age__gt=18) | Q(role="mod"))) == {"Alice", "dave", "Carol"}
    # double negation
    assert await names(q.filter(~~Q(age__gt=18))) == {"Alice", "dave"}


async def test_q_nested_deeply(session, users):
    q = session.query(User)
    # level 3: (A & (B | ~C)) | (D & ~(E | F))
    tree = (Q(age__gte=18) & (Q(role="admin") | ~Q(vip=False))) | (
        Q(name__startswith="b") & ~(Q(age__gt=20) | Q(role="guest"))
    )
    # Alice: age 30, admin -> left.  dave: 65, vip -> left.  Eve: 18 guest, not vip -> no.
    # bob: starts with b, age 17, member -> right.  Carol: age NULL -> left unknown, right false.
    assert await names(q.filter(tree)) == {"Alice", "dave", "bob"}

    # level 4 with negations at several depths
    tree4 = ~(
        (Q(role__in=["member", "guest"]) & ~(Q(age__lt=18) | (Q(vip=True) & ~Q(name="nobody")))) | Q(age__isnull=True)
    )
    # inner: member/guest and not (age<18 or vip) -> Eve only (bob age<18, dave vip); plus Carol.
    assert await names(q.filter(tree4)) == {"Alice", "bob", "dave"}

    # exclude(~tree) is NOT (NOT tree): the tree itself
    assert await names(q.exclude(~tree4)) == {"Alice", "bob", "dave"}

    # deep AND/OR chain built in a loop
    chain = Q(name="nobody")
    for n in ["Alice", "bob", "Carol"]:
        chain = chain | (Q(name=n) & (Q(vip=True) | ~Q(role="admin")))
    assert await names(q.filter(chain)) == {"Alice", "bob", "Carol"}


# ---------------------------------------------------------------------------------------------
# chaining, exclude, filter_by
# ---------------------------------------------------------------------------------------------


async def test_filter_chaining_and_filter_by(session, users):
    q = session.query(User)
    assert await names(q.filter(age__gte=18).filter(vip=True)) == {"Alice", "dave"}
    assert await names(q.filter(age__gte=18).filter(vip=True).filter(role="member")) == {"dave"}
    assert await names(q.filter(Q(role="admin") | Q(role="mod")).filter(Q(age__isnull=True))) == {"Carol"}

    # filter_by
    q = session.query(User)
    assert await names(q.filter_by(role="member")) == {"bob", "dave"}
    assert await names(q.filter_by(role="member", vip=False)) == {"bob"}
    assert await names(q.filter_by(name="dave").filter_by(age=65)) == {"dave"}
    assert await names(q.filter_by(age=None)) == {"Carol"}
    assert await names(q.filter_by(role="member").filter(age__gt=20)) == {"dave"}


async def test_exclude(session, users):
    q = session.query(User)
    assert await names(q.exclude(role="member")) == {"Alice", "Carol", "Eve"}
    assert await names(q.exclude(vip=True)) == {"bob", "Carol", "Eve"}
    # several lookups: NOT (a AND b)
    assert await names(q.exclude(role="member", vip=True)) == {"Alice", "bob", "Carol", "Eve"}
    # NULL: NOT (age > 18) is unknown for Carol
    assert await names(q.exclude(age__gt=18)) == {"bob", "Eve"}
    assert await names(q.exclude(age__isnull=True)) == {"Alice", "bob", "dave", "Eve"}
    assert await names(q.exclude(Q(role="admin") | Q(role="mod"))) == {"bob", "dave", "Eve"}
    # chained with filter
    assert await names(q.filter(vip=False).exclude(role="guest")) == {"bob", "Carol"}
    assert await names(q.exclude(role="member").exclude(age=None)) == {"Alice", "Eve"}


# ---------------------------------------------------------------------------------------------
# order_by, limit, offset, distinct
# ---------------------------------------------------------------------------------------------


async def test_order_by(session, users, orders):
    q = session.query(User)
    assert [u.name for u in await q.order_by("email").all()] == ["Alice", "bob", "Carol", "dave", "Eve"]
    assert [u.name for u in await q.order_by("-email").all()] == ["Eve", "dave", "Carol", "bob", "Alice"]
    assert [u.id for u in await q.order_by("id").all()] == sorted(u.id for u in users.values())
    assert [u.id for u in await q.order_by("-id").all()] == sorted((u.id for u in users.values()), reverse=True)

    # NULLs last ascending, first descending; several fields
    q = session.query(User)
    assert [u.name for u in await q.order_by("age").all()] == ["bob", "Eve", "Alice", "dave", "Carol"]
    assert [u.name for u in await q.order_by("-age").all()] == ["Carol", "dave", "Alice", "Eve", "bob"]
    # role asc, then age desc: admin(Alice) guest(Eve) member(dave 65, bob 17) mod(Carol)
    assert [u.name for u in await q.order_by("role", "-age").all()] == ["Alice", "Eve", "dave", "bob", "Carol"]
    assert [u.name for u in await q.order_by("vip", "email").all()] == ["bob", "Carol", "Eve", "Alice", "dave"]
    assert [u.name for u in await q.order_by("-vip", "-email").all()] == ["dave", "Alice", "Eve", "Carol", "bob"]
    assert [u.name for u in await q.filter(role="member").order_by("-age").all()] == ["dave", "bob"]

    # with a filter, on a float column
    amounts = [o.amount for o in await session.query(Order).filter(status="completed").order_by("-amount").all()]
    assert amounts == [30.5, 20.0, 10.0]


async def test_limit_and_offset_with_and_without_limit(session, users):
    ids = sorted(u.id for u in users.values())
    q = session.query(User).order_by("id")
    assert [u.id for u in await q.limit(2).all()] == ids[:2]
    assert [u.id for u in await q.limit(2).offset(1).all()] == ids[1:3]
    assert [u.id for u in await q.offset(1).limit(2).all()] == ids[1:3]
    assert [u.id for u in await q.limit(10).all()] == ids
    assert [u.id for u in await q.limit(0).all()] == []
    assert [u.id for u in await q.limit(3).offset(4).all()] == ids[4:]
    assert [u.id for u in await q.limit(3).offset(10).all()] == []
    ids = sorted(u.id for u in users.values())
    q = session.query(User).order_by("id")
    assert [u.id for u in await q.offset(3).all()] == ids[3:]
    assert [u.id for u in await q.offset(0).all()] == ids
    assert [u.id for u in await q.offset(5).all()] == []
    assert [u.name for u in await session.query(User).order_by("-age").offset(3).all()] == ["Eve", "bob"]
    q = session.query(User).filter(age__isnull=False).order_by("-age")
    assert [u.name for u in await q.limit(2).all()] == ["dave", "Alice"]
    assert [u.name for u in await q.offset(1).limit(2).all()] == ["Alice", "Eve"]


async def test_distinct(session, users, orders):
    roles = await session.query(User).distinct().values_list("role", flat=True)
    assert sorted(roles) == ["admin", "guest", "member", "mod"]
    statuses = await session.query(Order).distinct().order_by("status").values("status")
    assert statuses == [{"status": "cancelled"}, {"status": "completed"}, {"status": "pending"}]
    pairs = await session.query(User).distinct().values_list("role", "vip")
    assert sorted(pairs) == [("admin", True), ("guest", False), ("member", False), ("member", True), ("mod", False)]
    # distinct over whole rows keeps every row (each has its own primary key)
    assert await names(session.query(User).distinct()) == ALL
    # without distinct, duplicates are kept
    assert sorted(await session.query(User).values_list("role", flat=True)) == [
        "admin",
        "guest",
        "member",
        "member",
        "mod",
    ]


# ---------------------------------------------------------------------------------------------
# group_by, values with aggregates, having
# ---------------------------------------------------------------------------------------------


def _by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


async def test_group_by_values_with_aggregates(session, orders):
    rows = await (
        session.query(Order)
        .group_by("status")
        .values("status", "count", "sum__amount", "avg__amount", "min__amount", "max__quantity")
    )
    assert len(rows) == 3
    by = _by(rows, "status")
    assert set(by) == {"completed", "pending", "cancelled"}
    assert by["completed"]["count"] == 3
    assert by["completed"]["sum__amount"] == pytest.approx(60.5)
    assert by["completed"]["avg__amount"] == pytest.approx(60.5 / 3)
    assert by["completed"]["min__amount"] == pytest.approx(10.0)
    assert by["completed"]["max__quantity"] == 3
    assert by["pending"]["count"] == 1
    assert by["pending"]["sum__amount"] == pytest.approx(5.0)
    assert by["cancelled"]["count"] == 2
    assert by["cancelled"]["sum__amount"] == pytest.approx(10.0)
    assert by["cancelled"]["avg__amount"] == pytest.approx(5.0)
    assert set(rows[0]) == {"status", "count", "sum__amount", "avg__amount", "min__amount", "max__quantity"}

    # with a WHERE filter and order_by
    rows = await (
        session.query(Order).filter(amount__gt=3).group_by("status").order_by("status").values("status", "count")
    )
    assert rows == [
        {"status": "cancelled", "count": 1},
        {"status": "completed", "count": 3},
        {"status": "pending", "count": 1},
    ]

    # values_list
    rows = await session.query(Order).group_by("status").values_list("status", "count", "sum__quantity")
    assert sorted(rows) == [("cancelled", 2, 3), ("completed", 3, 6), ("pending", 1, 1)]


async def test_group_by_nullable_columns_and_several_fields(session, users):
    rows = await session.query(User).group_by("role").values("role", "count", "avg__age", "max__age")
    by = _by(rows, "role")
    assert by["member"]["count"] == 2
    assert by["member"]["avg__age"] == pytest.approx(41.0)
    assert by["member"]["max__age"] == 65
    assert by["mod"]["count"] == 1
    assert by["mod"]["avg__age"] is None
    assert by["mod"]["max__age"] is None
    rows = await session.query(User).group_by("role", "vip").values_list("role", "vip", "count")
    assert sorted(rows) == [
        ("admin", True, 1),
        ("guest", False, 1),
        ("member", False, 1),
        ("member", True, 1),
        ("mod", False, 1),
    ]


HAVING_CASES = [
    ({"count__gt": 1}, {"completed", "cancelled"}),
    ({"count": 1}, {"pending"}),
    ({"count__gte": 3}, {"completed"}),
    ({"sum__amount__gte": 10}, {"completed", "cancelled"}),
    ({"sum__amount__gt": 10}, {"completed"}),
    ({"avg__amount__lt": 6}, {"pending", "cancelled"}),
    ({"max__quantity__gte": 3}, {"completed"}),
    ({"min__amount__lt": 3}, {"cancelled"}),
    ({"count__gt": 1, "sum__amount__lt": 50}, {"cancelled"}),
    ({"count__gt": 100}, set()),
]


async def test_having(session, orders):
    # WHERE drops cancelled 2.5, so cancelled sums to 7.5 and fails the HAVING
    rows = await (
        session.query(Order)
        .filter(amount__gt=3)
        .group_by("status")
        .having(sum__amount__gte=7.6)
        .values("status", "sum__amount")
    )
    assert rows == [{"status": "completed", "sum__amount": pytest.approx(60.5)}]

    # having chained
    rows = await (
        session.query(Order)
        .group_by("status")
        .having(sum__amount__gte=10)
        .having(avg__amount__gt=6)
        .values_list("status", flat=True)
    )
    assert rows == ["completed"]

    # every HAVING_CASES case; the assertion lists every mismatching case
    q = session.query(Order).group_by("status")
    bad = []
    for having, expected in HAVING_CASES:
        try:
            got = {r["status"] for r in await q.having(**having).values("status", "count")}
        except Exception as e:
            got = f"{type(e).__name__}: {e}"
        if got != expected:
            bad.append(f"having({having}): got {got!r}, expected {expected!r}")
    assert bad == []


# ---------------------------------------------------------------------------------------------
# aggregates
# ---------------------------------------------------------------------------------------------


async def test_count_exists_and_aggregates_skip_nulls(session, users):
    q = session.query(User)
    assert await q.count() == 5
    assert await q.filter(age__gte=18).count() == 3
    assert await q.filter(vip=True).count() == 2
    assert await q.filter(Q(role="admin") | Q(age=None)).count() == 2
    assert await q.exclude(vip=True).count() == 3
    assert await q.exists() is True
    assert await q.filter(email="alice@example.com").exists() is True
    assert await q.filter(email="admin@example.com").exists() is False
    assert await q.filter(age__gt=18, role="guest").exists() is False
    assert await q.filter(metadata__plan="free").exists() is True

    # aggregates skip NULLs
    q = session.query(User)
    assert await q.sum("age") == 30 + 17 + 65 + 18
    assert await q.avg("age") == pytest.approx((30 + 17 + 65 + 18) / 4)
    assert await q.min("age") == 17
    assert await q.max("age") == 65
    assert await q.filter(age=None).sum("age") is None
    assert await q.filter(age=None).count() == 1


async def test_aggregates(session, orders):
    q = session.query(Order)
    assert await q.sum("amount") == pytest.approx(75.5)
    assert await q.filter(status="completed").sum("amount") == pytest.approx(60.5)
    assert await q.avg("amount") == pytest.approx(75.5 / 6)
    assert await q.min("amount") == pytest.approx(2.5)
    assert await q.max("amount") == pytest.approx(30.5)
    total_q = await q.sum("quantity")
    assert total_q == 10 and isinstance(total_q, int)
    assert await q.max("quantity") == 3
    assert await q.min("quantity") == 1
    assert await q.filter(status="cancelled").avg("quantity") == pytest.approx(1.5)

    # on an empty set: count 0, the others None
    q = session.query(Order).filter(amount__gt=1000)
    assert await q.count() == 0
    assert await q.sum("amount") is None
    assert await q.avg("amount") is None
    assert await q.min("amount") is None
    assert await q.max("amount") is None
    assert await q.sum("quantity") is None


async def test_aggregates_on_empty_table(session):
    q = session.query(Order)
    assert await q.count() == 0
    assert await q.sum("amount") is None
    assert await q.avg("quantity") is None
    assert await q.exists() is False
    assert await q.first() is None
    assert await q.all() == []
    assert await q.values() == []
    assert await q.values_list("id", flat=True) == []


async def test_count_of_limited_offset_and_distinct_query(session, users):
    q = session.query(User).order_by("id")
    assert await q.limit(2).count() == 2
    assert await q.limit(10).count() == 5
    assert await q.limit(0).count() == 0
    assert await q.offset(4).count() == 1
    assert await q.offset(2).limit(2).count() == 2
    assert await q.filter(age__gte=18).limit(2).count() == 2
    assert await q.filter(age__gte=18).offset(2).count() == 1
    assert await session.query(User).distinct().count() == 5
    assert await session.query(User).filter(role="member").distinct().count() == 2


async def test_aggregate_of_limited_query(session, orders):
    # the aggregate runs over the rows the ordered, limited query selects
    q = session.query(Order).order_by("-amount").limit(2)
    assert await q.values_list("amount", flat=True) == [30.5, 20.0]
    assert await q.sum("amount") == pytest.approx(50.5)
    assert await q.min("amount") == pytest.approx(20.0)
    tail = session.query(Order).order_by("-amount").offset(4)
    assert await tail.values_list("amount", flat=True) == [5.0, 2.5]
    assert await tail.max("amount") == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------
# first / one / one_or_none
# ---------------------------------------------------------------------------------------------


async def test_first_one_and_one_or_none(session, users):
    q = session.query(User)
    first = await q.first()
    assert first.id == min(u.id for u in users.values())
    assert first.name == "Alice"
    assert (await q.order_by("-age").first()).name == "Carol"
    assert (await q.order_by("age").first()).name == "bob"
    assert (await q.filter(role="member").first()).name == "bob"
    assert (await q.filter(role="member").order_by("-id").first()).name == "dave"
    assert await q.filter(name="nobody").first() is None

    # one() / one_or_none()
    q = session.query(User)
    bob = await q.filter(name="bob").one()
    assert isinstance(bob, User) and bob.id == users["bob"].id and bob.age == 17
    assert (await q.filter(metadata__plan="free").one()).name == "bob"
    assert (await q.filter(email="eve@example.org").one_or_none()).name == "Eve"
    assert await q.filter(name="nobody").one_or_none() is None


# ---------------------------------------------------------------------------------------------
# delete / update
# ---------------------------------------------------------------------------------------------


async def test_query_delete_returns_count(session, users, orders):
    q = session.query(User)
    assert await q.filter(age__lt=18).delete() == 1
    assert await names(q) == ALL - {"bob"}
    assert await q.filter(Q(role="member") | Q(role="guest")).delete() == 2
    assert await names(q) == {"Alice", "Carol"}
    assert await q.filter(name="nobody").delete() == 0
    assert await q.count() == 2
    assert await session.get(User, users["bob"].id) is None
    assert (await session.get(User, users["Alice"].id)).name == "Alice"

    # delete() without filters deletes every row
    assert await session.query(Order).delete() == 6
    assert await session.query(Order).count() == 0


async def test_query_update_returns_count(session, users):
    q = session.query(User)
    assert await q.filter(role="member").update(role="guest") == 2
    assert await names(q.filter(role="guest")) == {"bob", "dave", "Eve"}
    assert await q.filter(role="member").count() == 0
    assert await q.filter(name="nobody").update(age=1) == 0
    # several values, including setting NULL
    assert await q.filter(name="Alice").update(age=None, vip=False) == 1
    alice = await session.get(User, users["Alice"].id)
    assert alice.age is None and alice.vip is False and alice.role == "admin"
    # other rows untouched
    carol = await session.get(User, users["Carol"].id)
    assert carol.role == "mod" and carol.age is None

    # updating a JSON column, filtering with lookups
    q = session.query(User)
    assert await q.filter(metadata__plan="premium").update(metadata={"plan": "gold"}) == 2
    assert await names(q.filter(metadata__plan="gold")) == {"Alice", "Carol"}
    assert await q.filter(metadata__plan="premium").count() == 0
    assert await q.filter(age__range=(17, 18)).update(age=20) == 2
    assert sorted(await q.filter(age=20).values_list("name", flat=True)) == ["Eve", "bob"]


# ---------------------------------------------------------------------------------------------
# values / values_list
# ---------------------------------------------------------------------------------------------


async def test_values_and_values_list(session, users):
    rows = await session.query(User).filter(role="member").order_by("name").values("name", "age")
    assert rows == [{"name": "bob", "age": 17}, {"name": "dave", "age": 65}]

    # values() without fields gives every field
    rows = await session.query(User).filter(name="dave").values()
    assert rows == [
        {
            "id": users["dave"].id,
            "name": "dave",
            "email": "dave@example.org",
            "age": 65,
            "role": "member",
            "vip": True,
            "metadata": {},
        }
    ]
    assert isinstance(rows[0]["vip"], bool)

    # values_list
    q = session.query(User).order_by("age")
    assert await q.values_list("name", "age") == [
        ("bob", 17),
        ("Eve", 18),
        ("Alice", 30),
        ("dave", 65),
        ("Carol", None),
    ]
    assert await q.values_list("name", flat=True) == ["bob", "Eve", "Alice", "dave", "Carol"]
    assert await q.filter(vip=True).values_list("vip", flat=True) == [True, True]
    rows = await q.limit(1).values_list("id", "name", "email", "age", "role", "vip", "metadata")
    all_fields = await q.limit(1).values_list()
    assert rows == all_fields
    assert rows[0][1] == "bob"
    assert isinstance(rows[0], tuple)
    q = session.query(User).order_by("-age").offset(1).limit(2)
    assert await q.values("name") == [{"name": "dave"}, {"name": "Alice"}]
    assert await q.values_list("name", flat=True) == ["dave", "Alice"]


# ---------------------------------------------------------------------------------------------
# immutability
# ---------------------------------------------------------------------------------------------


async def test_queries_are_immutable(session, users, orders):
    base = session.query(User)
    adults = base.filter(age__gte=18)
    vip_adults = adults.filter(vip=True)
    adults.exclude(role="admin")
    adults.order_by("-age")
    adults.limit(1)
    adults.offset(2)
    adults.distinct()
    adults.filter_by(role="guest")
    adults.filter(Q(name="Eve") | Q(name="dave"))
    limited = adults.order_by("age").limit(1)

    assert await names(base) == ALL
    assert await names(adults) == {"Alice", "dave", "Eve"}
    assert await adults.count() == 3
    assert await names(vip_adults) == {"Alice", "dave"}
    assert [u.name for u in await limited.all()] == ["Eve"]
    assert [u.name for u in await limited.offset(1).all()] == ["Alice"]
    assert [u.name for u in await limited.all()] == ["Eve"]
    # running terminal methods does not change the query either
    assert await adults.count() == 3
    await adults.values("name")
    await adults.first()
    assert await names(adults) == {"Alice", "dave", "Eve"}
    base = session.query(Order)
    grouped = base.group_by("status")
    grouped.having(sum__amount__gt=10)
    assert len(await grouped.values("status", "count")) == 3
    assert await base.count() == 6
    assert len(await base.all()) == 6

    # a query is re-run each time it is awaited and sees new rows
    q = session.query(User).filter(role="member")
    assert await q.count() == 2
    await session.insert(User(name="Zed", email="zed@example.com", role="member"))
    assert await q.count() == 3
    assert "Zed" in await names(q)
