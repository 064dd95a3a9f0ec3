"""Bad input to the query builder and the session: unknown fields and lookups, SQL smuggled into
identifiers or values, values of the wrong type, constraint violations and the result-count
errors of one() / get_or_raise(). Each error must be the documented exception, with a useful
message, and must leave the database and the session as they were."""

from __future__ import annotations

import inspect

import pytest

import ormkit
import ormkit.exceptions
from ormkit import (
    DatabaseError,
    FieldError,
    IntegrityError,
    MultipleResultsFound,
    NoResultFound,
    OrmKitError,
    Q,
    ValueTypeError,
)
from tests.models import User

FIELDS = ("id", "name", "email", "age", "role", "vip", "metadata")


async def _run(make, *args):
    """Calls ``make(*args)`` and awaits the result when it is awaitable, so a builder error
    raised either when the query is built or when it is awaited is caught by the surrounding
    ``pytest.raises``."""
    result = make(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _seed(session) -> list[User]:
    return await session.insert_all(
        [
            User(name="Alice", email="alice@example.com", age=30, role="admin"),
            User(name="bob", email="bob@example.com", age=17),
            User(name="Carol", email="carol@example.com", age=None, role="mod"),
        ]
    )


async def _raw_count(engine) -> int:
    """Rows in t_users, counted with hand-written SQL (also proves the table still exists)."""
    return (await engine.execute("SELECT COUNT(*) FROM t_users", [])).scalar()


# ---------------------------------------------------------------------------------------------
# FieldError: unknown field / lookup, raised when the query is built, before any SQL;
# SQL in identifiers is an unknown field, never SQL
# ---------------------------------------------------------------------------------------------

# (label, builder, fragments the message must contain: model, field, valid choices).
BUILD_ERRORS = [
    ("filter-unknown-field", lambda q: q.filter(foo__gt=1), ["User", "foo", *FIELDS]),
    ("filter-unknown-field-exact", lambda q: q.filter(foo=1), ["User", "foo", *FIELDS]),
    (
        "filter-unknown-lookup",
        lambda q: q.filter(age__regexx=1),
        ["User", "age", "regexx", "gt", "gte", "lt", "in", "contains", "isnull", "range"],
    ),
    ("order_by", lambda q: q.order_by("nope"), ["User", "nope", *FIELDS]),
    ("order_by-desc", lambda q: q.order_by("-nope"), ["User", "nope", *FIELDS]),
    ("group_by", lambda q: q.group_by("nope"), ["User", "nope", *FIELDS]),
    ("having", lambda q: q.having(bogus=1), ["User", "bogus", "count", "sum", "avg"]),
]


def _field_error_failures(label: str, error: BaseException | None, fragments) -> list[str]:
    if error is None:
        return [f"{label}: no error"]
    if type(error) is not FieldError:
        return [f"{label}: expected FieldError, got {type(error).__name__}: {error}"]
    missing = [f for f in fragments if f not in str(error)]
    return [f"{label}: message {str(error)!r} lacks {missing}"] if missing else []


async def test_field_error_when_building_names_model_field_and_choices(engine, session):
    # drop every table: anything that ran SQL would fail with a database error, not FieldError
    await engine.drop_all()
    # control: a valid query against the dropped tables does reach the database and fails there
    with pytest.raises(DatabaseError):
        await session.query(User).count()

    failures = []
    for label, builder, fragments in BUILD_ERRORS:
        error = None
        try:
            builder(session.query(User))  # not awaited: building the query must raise
        except Exception as e:
            error = e
        failures += _field_error_failures(label, error, fragments)

    # values()/values_list() are terminal: the error comes before any SQL
    q = session.query(User)
    for label, make in (
        ("values", lambda: q.values("nope")),
        ("values_list", lambda: q.values_list("nope")),
        ("values_list-flat", lambda: q.values_list("nope", flat=True)),
        ("values-second-field", lambda: q.values("name", "nope")),
    ):
        error = None
        try:
            await _run(make)
        except Exception as e:
            error = e
        failures += _field_error_failures(label, error, ["User", "nope", *FIELDS])

    # more places a field name is taken
    cases = {
        "exclude": (lambda: q.exclude(foo=1), "foo"),
        "filter_by": (lambda: q.filter_by(foo=1), "foo"),
        "filter_by-with-lookup": (lambda: q.filter_by(age__gt=1), "age__gt"),
        "nested-Q": (lambda: q.filter(Q(name="x") | (Q(age=1) & ~Q(foo__lt=3))), "foo"),
        "lookup-on-non-json-column": (lambda: q.filter(name__foo="x"), "foo"),
        "unknown-lookup-in-Q": (lambda: q.filter(~Q(age__regexx=1)), "regexx"),
        "sum": (lambda: q.sum("nope"), "nope"),
        "avg": (lambda: q.avg("nope"), "nope"),
        "min": (lambda: q.min("nope"), "nope"),
        "max": (lambda: q.max("nope"), "nope"),
        "update": (lambda: q.update(nope=1), "nope"),
        "having-unknown-field": (lambda: q.group_by("role").having(sum__nope__gt=1), "nope"),
    }
    for label, (make, field) in cases.items():
        error = None
        try:
            await _run(make)
        except Exception as e:
            error = e
        failures += _field_error_failures(label, error, ["User", field])
    assert failures == []


async def test_bad_queries_and_sql_in_identifiers_leave_the_table_untouched(engine, session):
    await _seed(session)
    q = session.query(User)
    for make in (
        lambda: q.filter(foo__gt=1),
        lambda: q.filter(age__regexx=1),
        lambda: q.order_by("nope"),
        lambda: q.group_by("nope"),
        lambda: q.having(bogus=1),
        lambda: q.filter(foo=1).delete(),
        lambda: q.filter(age__regexx=1).update(age=1),
        lambda: q.values("nope"),
    ):
        with pytest.raises(FieldError):
            await _run(make)
    assert await _raw_count(engine) == 3
    assert sorted(await q.values_list("age", flat=True), key=lambda a: (a is None, a)) == [17, 30, None]

    # the two examples of the issue, spelled out
    with pytest.raises(FieldError) as exc:
        q.order_by("name; DROP TABLE t_users")
    assert "name; DROP TABLE t_users" in str(exc.value)
    with pytest.raises(FieldError):
        await _run(lambda: q.values("name; DROP TABLE t_users"))
    assert await _raw_count(engine) == 3

    # SQL in any identifier is an unknown field, never SQL
    evil = [
        "name; DROP TABLE t_users",
        "-name; DROP TABLE t_users",
        "name DESC",
        'name"; DROP TABLE t_users; --',
        "name) OR 1=1 --",
        "(SELECT 1)",
        "",
    ]
    failures = []
    builders = (
        ("order_by", lambda i: q.order_by(i)),
        ("values", lambda i: q.values(i)),
        ("values_list", lambda i: q.values_list(i)),
        ("values_list-flat", lambda i: q.values_list(i, flat=True)),
        ("group_by", lambda i: q.group_by(i)),
        ("filter-key", lambda i: q.filter(**{i: "x"})),
        ("filter_by-key", lambda i: q.filter_by(**{i: "x"})),
        ("having-key", lambda i: q.having(**{i: 1})),
        ("sum", lambda i: q.sum(i)),
    )
    for ident in evil:
        for label, make in builders:
            try:
                await _run(make, ident)
            except FieldError:
                pass
            except Exception as e:
                failures.append(f"{label}({ident!r}): {type(e).__name__}: {e}")
            else:
                failures.append(f"{label}({ident!r}): no error")
    # JSON path keys are identifiers too
    for key in ("a'); DROP TABLE t_users; --", 'a"b', "a.b", "a[0]", "$", "a b"):
        try:
            await _run(lambda k: q.filter(**{f"metadata__{k}": 1}).all(), key)
        except FieldError:
            pass
        except Exception as e:
            failures.append(f"metadata__{key!r}: {type(e).__name__}: {e}")
        else:
            failures.append(f"metadata__{key!r}: no error")
    assert failures == []
    # the table is still there with every row
    assert await _raw_count(engine) == 3
    assert sorted(await q.values_list("name", flat=True)) == ["Alice", "Carol", "bob"]


# ---------------------------------------------------------------------------------------------
# values are bound: quotes, SQL and pattern characters match literally
# ---------------------------------------------------------------------------------------------

SPECIAL_NAMES = [
    "x'; DROP TABLE t_users; --",
    "Robert'); DROP TABLE t_users;--",
    "O'Brien",
    "o'brien",
    'say "hi"',
    "100%",
    "100 percent",
    "1000",
    "%",
    "a_b",
    "axb",
    "ab",
    "_",
    "back\\slash",
    "back/slash",
    "backslash",
    "\\",
    "star*",
    "starry",
    "*",
    "what?",
    "whatx",
    "?",
    "[bracket]",
    "bracket",
    "[",
    "[ab]c",
    "ac",
    "bc",
    "' OR '1'='1",
    "it's 50% off_now\\",
    "plain",
]

NEEDLES = [
    "x'; DROP TABLE t_users; --",
    "'",
    "''",
    '"',
    "%",
    "%%",
    "_",
    "\\",
    "\\%",
    "*",
    "?",
    "[",
    "]",
    "[ab]",
    "[ab]c",
    "--",
    ";",
    "' OR '1'='1",
    "a_b",
    "100%",
    "O'Brien",
    "o'BRIEN",
    "% off_",
]

ORACLE = {
    "exact": lambda n, v: n == v,
    "ne": lambda n, v: n != v,
    "contains": lambda n, v: v in n,
    "startswith": lambda n, v: n.startswith(v),
    "endswith": lambda n, v: n.endswith(v),
    "icontains": lambda n, v: v.lower() in n.lower(),
    "istartswith": lambda n, v: n.lower().startswith(v.lower()),
    "iendswith": lambda n, v: n.lower().endswith(v.lower()),
    "iexact": lambda n, v: n.lower() == v.lower(),
    "in": lambda n, v: n in (v, "plain"),
    "notin": lambda n, v: n not in (v, "plain"),
}


@pytest.fixture
async def specials(session) -> list[User]:
    return await session.insert_all(
        [User(name=n, email=f"s{i}@example.com", metadata={"note": n}) for i, n in enumerate(SPECIAL_NAMES)]
    )


async def test_special_values_round_trip_and_match_literally(session, specials):
    for u in specials:
        got = await session.get(User, u.id)
        assert got.name == u.name
        assert got.metadata == {"note": u.name}

    # in Q, exclude and filter_by
    q = session.query(User)
    evil = "x'; DROP TABLE t_users; --"
    assert {u.name for u in await q.filter_by(name=evil).all()} == {evil}
    assert {u.name for u in await q.filter(Q(name=evil) | Q(name="%")).all()} == {evil, "%"}
    assert await q.exclude(name__contains="'").count() == len([n for n in SPECIAL_NAMES if "'" not in n])
    assert await q.filter(~Q(name__startswith="%") & Q(name__endswith="%")).count() == 1  # "100%"

    async def like(pattern: str) -> set[str]:
        return {u.name for u in await q.filter(name__like=pattern).all()}

    # like takes a raw pattern with backslash escapes

    assert await like("100\\%") == {"100%"}
    assert await like("a\\_b") == {"a_b"}
    assert await like("a_b") == {"a_b", "axb"}  # unescaped _ is a wildcard in LIKE
    assert await like("%\\%%") == {n for n in SPECIAL_NAMES if "%" in n}
    assert await like("%\\\\%") == {n for n in SPECIAL_NAMES if "\\" in n}
    assert await like("%'%") == {n for n in SPECIAL_NAMES if "'" in n}
    assert await like("[ab]c") == {"[ab]c"}  # brackets are not special in LIKE


async def test_values_are_bound_and_match_literally(engine, session, specials):
    q = session.query(User)
    failures = []
    for needle in NEEDLES:
        for lookup, oracle in ORACLE.items():
            value = [needle, "plain"] if lookup in ("in", "notin") else needle
            expected = {n for n in SPECIAL_NAMES if oracle(n, needle)}
            try:
                got = {u.name for u in await q.filter(**{f"name__{lookup}": value}).all()}
            except Exception as e:
                got = f"{type(e).__name__}: {e}"
            if got != expected:
                failures.append(f"name__{lookup}={value!r}: got {got!r}, expected {expected!r}")

    # the same through a JSON path
    for needle in NEEDLES:
        for lookup in ("exact", "contains", "startswith", "endswith", "icontains"):
            expected = {n for n in SPECIAL_NAMES if ORACLE[lookup](n, needle)}
            try:
                got = {u.name for u in await q.filter(**{f"metadata__note__{lookup}": needle}).all()}
            except Exception as e:
                got = f"{type(e).__name__}: {e}"
            if got != expected:
                failures.append(f"metadata__note__{lookup}={needle!r}: got {got!r}, expected {expected!r}")
    assert failures == []
    assert await _raw_count(engine) == len(SPECIAL_NAMES)


async def test_update_and_delete_with_special_values(engine, session, specials):
    q = session.query(User)
    evil = "x'; DROP TABLE t_users; --"
    assert await q.filter(name="plain").update(name="'; DELETE FROM t_users; --") == 1
    assert await q.filter(name="'; DELETE FROM t_users; --").count() == 1
    assert await q.filter(name=evil).delete() == 1
    assert await q.filter(name__contains="%").delete() == len([n for n in SPECIAL_NAMES if "%" in n])
    assert await _raw_count(engine) == len(SPECIAL_NAMES) - 1 - len([n for n in SPECIAL_NAMES if "%" in n])


async def test_limited_update_and_delete_never_touch_rows_outside_the_limit(engine, session):
    """update()/delete() on a limited query either refuse (an OrmKitError, nothing changed) or
    change exactly the rows the limited query selects; they never widen to every row."""
    await session.insert_all([User(name=n, email=f"{n}@example.com", age=i) for i, n in enumerate("abcde")])
    q = session.query(User).order_by("-age")
    try:
        changed = await q.limit(2).update(role="top")
    except OrmKitError:
        assert await session.query(User).filter(role="top").count() == 0
    else:
        assert changed == 2
        assert sorted(await session.query(User).filter(role="top").values_list("name", flat=True)) == ["d", "e"]
    for make, survivors in (
        (lambda: q.limit(1).delete(), ["a", "b", "c", "d"]),
        (lambda: q.offset(3).delete(), ["c", "d", "e"]),
    ):
        try:
            await make()
        except OrmKitError:
            assert await _raw_count(engine) == 5
        else:
            assert sorted(await session.query(User).values_list("name", flat=True)) == survivors
            await session.insert_all(
                [User(name=n, email=f"{n}@example.com", age=i) for i, n in enumerate("abcde") if n not in survivors]
            )


# ---------------------------------------------------------------------------------------------
# ValueTypeError: a value of the wrong type for its column
# ---------------------------------------------------------------------------------------------


async def test_wrong_value_types_raise_value_type_error_naming_the_field(engine, session):
    users = await _seed(session)
    q = session.query(User)
    cases = [
        ("filter(age='abc')", lambda: q.filter(age="abc"), "User.age"),
        ("filter(age__in='abc')", lambda: q.filter(age__in="abc"), "User.age"),
        ("filter(age__in=['a', 1])", lambda: q.filter(age__in=["a", 1]), "User.age"),
        ("filter(age__gt='10')", lambda: q.filter(age__gt="10"), "User.age"),
        ("filter(age__range=(1,))", lambda: q.filter(age__range=(1,)), "User.age"),
        ("filter(name__contains=5)", lambda: q.filter(name__contains=5), "User.name"),
        ("filter(name__startswith=5)", lambda: q.filter(name__startswith=5), "User.name"),
        ("filter(age__isnull='yes')", lambda: q.filter(age__isnull="yes"), "User.age"),
        ("filter(vip='yes')", lambda: q.filter(vip="yes"), "User.vip"),
        ("filter(Q | Q(age='abc'))", lambda: q.filter(Q(name="a") | ~Q(age="abc")), "User.age"),
        ("exclude(email=5)", lambda: q.exclude(email=5), "User.email"),
        ("filter_by(age='abc')", lambda: q.filter_by(age="abc"), "User.age"),
        ("query.update(age='x')", lambda: q.update(age="x"), "User.age"),
        ("bulk_update(age='x')", lambda: session.bulk_update(User, {"age": "x"}, name="bob"), "User.age"),
        ("insert(User(name=5))", lambda: session.insert(User(name=5, email="five@example.com")), "User.name"),
        (
            "insert_all([ok, User(age='x')])",
            lambda: session.insert_all(
                [User(name="ok", email="ok@example.com"), User(name="bad", email="bad@example.com", age="x")]
            ),
            "User.age",
        ),
        ("session.update(age='old')", lambda: session.update(users[0], age="old"), "User.age"),
    ]
    failures = []
    for label, make, field in cases:
        try:
            await _run(make)
        except ValueTypeError as e:
            if field not in str(e):
                failures.append(f"{label}: message {str(e)!r} does not name {field}")
        except Exception as e:
            failures.append(f"{label}: expected ValueTypeError, got {type(e).__name__}: {e}")
        else:
            failures.append(f"{label}: no error")
    assert failures == []

    # nothing was written and the session is still usable
    assert await _raw_count(engine) == 3
    assert (await session.get(User, users[0].id)).age == 30
    assert (await session.get(User, users[1].id)).age == 17
    dave = await session.insert(User(name="dave", email="dave@example.com", age=65))
    assert isinstance(dave.id, int)
    assert {u.name for u in await q.filter(age__gte=18).all()} == {"Alice", "dave"}
    assert await q.count() == 4


# ---------------------------------------------------------------------------------------------
# IntegrityError, and the session keeps working
# ---------------------------------------------------------------------------------------------


async def test_unique_violation_raises_integrity_error_and_session_survives(engine, session):
    users = await _seed(session)
    with pytest.raises(IntegrityError) as exc:
        await session.insert(User(name="Alice2", email="alice@example.com"))
    assert isinstance(exc.value, DatabaseError) and isinstance(exc.value, OrmKitError)
    # the engine and session still work: insert another row, query
    eve = await session.insert(User(name="Eve", email="eve@example.com", age=18))
    assert isinstance(eve.id, int)
    assert (await session.get(User, eve.id)).name == "Eve"
    assert await session.query(User).count() == 4
    assert await session.query(User).filter(email="alice@example.com").count() == 1
    assert (await session.query(User).filter(email="alice@example.com").one()).name == "Alice"
    # a second violation right away is reported the same way
    with pytest.raises(IntegrityError):
        await session.insert(User(name="Eve2", email="eve@example.com"))
    assert await _raw_count(engine) == 4
    # updates that would violate the constraint fail and change nothing
    with pytest.raises(IntegrityError):
        await session.update(users[1], email="alice@example.com")
    assert (await session.get(User, users[1].id)).email == "bob@example.com"
    with pytest.raises(IntegrityError):
        await session.query(User).update(email="same@example.com")
    assert sorted(await session.query(User).values_list("email", flat=True)) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "eve@example.com",
    ]
    with pytest.raises(IntegrityError):
        await session.bulk_update(User, {"email": "carol@example.com"}, name="bob")
    assert (await session.get(User, users[1].id)).email == "bob@example.com"
    # and the session is still usable after all of that
    assert await session.query(User).filter(name__in=["Alice", "Eve"]).count() == 2
    assert await session.query(User).filter(name="bob").update(age=18) == 1


async def test_insert_all_with_duplicate_rolls_back_everything(engine, session):
    await _seed(session)
    # duplicate inside the batch
    with pytest.raises(IntegrityError):
        await session.insert_all(
            [
                User(name="d1", email="d1@example.com"),
                User(name="d2", email="dup@example.com"),
                User(name="d3", email="dup@example.com"),
                User(name="d4", email="d4@example.com"),
            ]
        )
    assert await _raw_count(engine) == 3
    assert await session.query(User).filter(name__in=["d1", "d2", "d3", "d4"]).count() == 0
    # duplicate of an existing row at the end of the batch
    with pytest.raises(IntegrityError):
        await session.insert_all([User(name="e1", email="e1@example.com"), User(name="e2", email="bob@example.com")])
    assert await _raw_count(engine) == 3
    assert await session.query(User).filter(email="e1@example.com").exists() is False
    # a good batch afterwards goes in whole
    good = await session.insert_all([User(name="f1", email="f1@example.com"), User(name="f2", email="f2@example.com")])
    assert all(isinstance(u.id, int) for u in good)
    assert await _raw_count(engine) == 5
    assert {u.name for u in await session.query(User).filter(name__startswith="f").all()} == {"f1", "f2"}


# ---------------------------------------------------------------------------------------------
# one() / one_or_none() / get_or_raise()
# ---------------------------------------------------------------------------------------------


async def test_one_with_zero_or_several_rows(session):
    q = session.query(User)
    with pytest.raises(NoResultFound):
        await q.one()  # empty table
    await _seed(session)
    with pytest.raises(NoResultFound) as exc:
        await q.filter(name="nobody").one()
    assert "User" in str(exc.value)
    with pytest.raises(MultipleResultsFound) as exc:
        await q.filter(age__ne=None).one()
    assert "User" in str(exc.value)
    with pytest.raises(MultipleResultsFound):
        await q.one()
    with pytest.raises(MultipleResultsFound):
        await q.filter(Q(name="Alice") | Q(name="bob")).one_or_none()
    assert await q.filter(name="nobody").one_or_none() is None
    assert (await q.filter(name="bob").one()).age == 17
    # one() is about the rows the query returns: a limit/offset that leaves one row gives it
    assert (await q.order_by("email").offset(2).one()).name == "Carol"
    assert (await q.order_by("email").limit(1).one()).name == "Alice"
    assert (await q.order_by("email").limit(1).offset(1).one_or_none()).name == "bob"


async def test_get_or_raise_and_negative_limit(session):
    users = await _seed(session)
    missing = max(u.id for u in users) + 100
    with pytest.raises(NoResultFound) as exc:
        await session.get_or_raise(User, missing)
    assert "User" in str(exc.value)
    assert await session.get(User, missing) is None
    assert (await session.get_or_raise(User, users[0].id)).name == "Alice"
    await session.remove(users[1])
    with pytest.raises(NoResultFound):
        await session.get_or_raise(User, users[1].id)

    # negative limit / offset
    q = session.query(User)
    with pytest.raises((ValueTypeError, ValueError)) as exc:
        q.limit(-1)
    assert "limit" in str(exc.value)
    with pytest.raises((ValueTypeError, ValueError)) as exc:
        q.offset(-1)
    assert "offset" in str(exc.value)
    with pytest.raises((ValueTypeError, TypeError)):
        q.limit("5")
    # the query and session are unaffected
    assert await q.count() == 2
    assert len(await q.limit(1).all()) == 1


# ---------------------------------------------------------------------------------------------
# the exception classes
# ---------------------------------------------------------------------------------------------


def test_exceptions_importable_from_both_modules():
    for name in (
        "OrmKitError",
        "DatabaseError",
        "IntegrityError",
        "FieldError",
        "ValueTypeError",
        "NoResultFound",
        "MultipleResultsFound",
    ):
        assert getattr(ormkit, name) is getattr(ormkit.exceptions, name)
    assert issubclass(IntegrityError, DatabaseError)
    assert issubclass(DatabaseError, OrmKitError)
    for cls in (FieldError, ValueTypeError, NoResultFound, MultipleResultsFound):
        assert issubclass(cls, OrmKitError)
        assert not issubclass(cls, DatabaseError)
