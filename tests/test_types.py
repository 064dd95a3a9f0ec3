"""Every type of the spec's type table round-trips exactly, through insert + get, query().all()
and values(); wrong Python types are refused with ValueTypeError naming the field; filters work
on every type."""

import datetime as dt
import math

import pytest

from ormkit import DataError, ValueTypeError
from tests.models import AllTypes

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PST = dt.timezone(dt.timedelta(hours=-8))

FIELDS = ("i", "big", "s", "f", "b", "raw", "ts", "tstz", "d", "t", "doc", "items")

# (field, value) pairs that must come back equal and of the same type
CASES = [
    ("i", 0),
    ("i", 42),
    ("i", -42),
    ("i", 2**31 - 1),
    ("i", -(2**31)),
    ("big", 2**63 - 1),
    ("big", -(2**63)),
    ("big", 2**40 + 7),
    ("big", -(2**53) - 1),
    ("s", "plain"),
    ("s", ""),
    ("s", "héllo wörld ✓ 日本語 😀"),
    ("s", 'it\'s "quoted" `back` \\ slash; DROP TABLE t_all_types; --'),
    ("s", "line1\nline2\ttab\r\n"),
    ("s", "x" * 10_000),
    ("f", 0.0),
    ("f", 3.141592653589793),
    ("f", -2.5e-300),
    ("f", 1.7976931348623157e308),
    ("f", 0.1 + 0.2),
    ("b", True),
    ("b", False),
    ("raw", b""),
    ("raw", b"\x00\xff"),
    ("raw", bytes(range(256))),
    ("raw", b"plain ascii"),
    ("ts", dt.datetime(2024, 1, 2, 3, 4, 5, 123456)),
    ("ts", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("ts", dt.datetime(1970, 1, 1)),
    ("ts", dt.datetime(1, 1, 1, 0, 0, 0, 1)),
    ("ts", dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ("tstz", dt.datetime(2024, 1, 2, 3, 4, 5, 654321, tzinfo=IST)),
    ("tstz", dt.datetime(2024, 12, 31, 20, 0, 0, tzinfo=PST)),
    ("tstz", dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)),
    ("d", dt.date(2024, 2, 29)),
    ("d", dt.date(1, 1, 1)),
    ("d", dt.date(9999, 12, 31)),
    ("t", dt.time(23, 59, 58, 999999)),
    ("t", dt.time(0, 0)),
    ("t", dt.time(12, 30, 0, 1)),
    ("doc", {}),
    ("doc", {"a": [1, 2, {"b": None, "c": True, "d": False}], "ü": "ñ😀", "n": 1.5, "q": 'it\'s "x"'}),
    ("doc", {"deep": {"deeper": {"deepest": [[], {}, [None]]}}}),
    ("items", []),
    ("items", [1, "x", None, False, True, 2.5, {"k": []}, ["nested", ["more"]]]),
    ("items", ["日本", "\"'", "\\u0000 as text"]),
]


def _same(a, b) -> bool:
    """Equal, of the same type, and (for datetimes) equally aware."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dt.datetime) and (a.tzinfo is None) != (b.tzinfo is None):
        return False
    if isinstance(a, (dict, list)):
        return _deep_same(a, b)
    return a == b


def _deep_same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_deep_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_deep_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _full_row() -> AllTypes:
    return AllTypes(
        i=-7,
        big=2**62 + 3,
        s="héllo 'q' \"d\" 😀",
        f=2.718281828459045,
        b=False,
        raw=b"\x00\xff\x00",
        ts=dt.datetime(2023, 7, 8, 9, 10, 11, 120003),
        tstz=dt.datetime(2023, 7, 8, 1, 2, 3, 400005, tzinfo=IST),
        d=dt.date(2023, 7, 8),
        t=dt.time(9, 10, 11, 120003),
        doc={"plan": "premium", "flags": [True, None], "ü": "ñ", "meta": {"n": 1}},
        items=[1, "two", None, False, {"three": 3.0}],
    )


# ---------------------------------------------------------------- round trips


async def test_round_trip_insert_get(session, reader):
    for field, value in CASES:
        obj = await session.insert(AllTypes(**{field: value}))
        got = await reader.get(AllTypes, obj.id)
        assert _same(getattr(got, field), value), (field, getattr(got, field), value)
        assert all(getattr(got, other) is None for other in FIELDS if other != field)


async def test_text_read_back_is_an_ordinary_str(session, reader):
    # ASCII and non-ASCII text take different paths into Python strings; both must hash,
    # compare, slice and report their kind like strings built in Python.
    texts = ["", "a", "plain ascii", "x" * 300, "é", "héllo 😀", "日本"]
    ids = [(await session.insert(AllTypes(s=t))).id for t in texts]
    got = await reader.query(AllTypes).filter(id__in=ids).order_by("id").values_list("s", flat=True)
    assert got == texts
    for g, t in zip(got, texts, strict=True):
        assert type(g) is str and hash(g) == hash(t) and {t: 1}[g] == 1
        assert g.isascii() == t.isascii() and len(g) == len(t) and g[::-1] == t[::-1]
        assert (g + "!").encode() == t.encode() + b"!"


async def test_all_cases_round_trip_through_query_all_and_values(session, reader):
    inserted = await session.insert_all([AllTypes(**{f: v}) for f, v in CASES])
    by_id = {o.id: (f, v) for o, (f, v) in zip(inserted, CASES, strict=True)}

    rows = await reader.query(AllTypes).order_by("id").all()
    assert [r.id for r in rows] == [o.id for o in inserted]
    for r in rows:
        f, v = by_id[r.id]
        assert _same(getattr(r, f), v), (f, getattr(r, f), v)
        for other in FIELDS:
            if other != f:
                assert getattr(r, other) is None

    for d in await reader.query(AllTypes).order_by("id").values():
        f, v = by_id[d["id"]]
        assert _same(d[f], v), (f, d[f], v)
        assert set(d) == {"id", *FIELDS}

    for f, v in CASES:
        got = await reader.query(AllTypes).filter(**{f"{f}__isnull": False}).order_by("id").values_list(f, flat=True)
        assert any(_same(g, v) for g in got), (f, v, got)


async def test_full_row_round_trips_every_path(session, reader):
    src = _full_row()
    obj = await session.insert(src)
    assert obj is src and isinstance(obj.id, int)
    expected = {f: getattr(_full_row(), f) for f in FIELDS}

    got = await reader.get(AllTypes, obj.id)
    for f in FIELDS:
        assert _same(getattr(got, f), expected[f]), f

    (row,) = await reader.query(AllTypes).all()
    for f in FIELDS:
        assert _same(getattr(row, f), expected[f]), f

    (vals,) = await reader.query(AllTypes).values()
    for f in FIELDS:
        assert _same(vals[f], expected[f]), f

    (vals2,) = await reader.query(AllTypes).values(*FIELDS)
    assert list(vals2) == list(FIELDS)
    for f in FIELDS:
        assert _same(vals2[f], expected[f]), f

    (tup,) = await reader.query(AllTypes).values_list(*FIELDS)
    for f, v in zip(FIELDS, tup, strict=True):
        assert _same(v, expected[f]), f


async def test_null_for_every_column(session, reader):
    obj = await session.insert(AllTypes())
    got = await reader.get(AllTypes, obj.id)
    for f in FIELDS:
        assert getattr(got, f) is None, f
    (row,) = await reader.query(AllTypes).all()
    assert all(getattr(row, f) is None for f in FIELDS)
    (vals,) = await reader.query(AllTypes).values(*FIELDS)
    assert vals == dict.fromkeys(FIELDS)
    for f in FIELDS:
        assert await reader.query(AllTypes).filter(**{f: None}).count() == 1, f


async def test_explicit_none_overwrites_value(session, reader):
    obj = await session.insert(_full_row())
    await session.update(obj, **dict.fromkeys(FIELDS))
    got = await reader.get(AllTypes, obj.id)
    assert all(getattr(got, f) is None for f in FIELDS)


async def test_bool_comes_back_bool_not_int(session, reader):
    t = await session.insert(AllTypes(b=True))
    f = await session.insert(AllTypes(b=False))
    assert (await reader.get(AllTypes, t.id)).b is True
    assert (await reader.get(AllTypes, f.id)).b is False
    vals = await reader.query(AllTypes).order_by("id").values_list("b", flat=True)
    assert vals == [True, False] and all(type(v) is bool for v in vals)


async def test_aware_datetime_equal_and_aware(session, reader):
    value = dt.datetime(2024, 3, 10, 23, 30, 0, 5, tzinfo=PST)  # next day in UTC
    obj = await session.insert(AllTypes(tstz=value))
    got = (await reader.get(AllTypes, obj.id)).tstz
    assert got == value
    assert got.tzinfo is not None and got.utcoffset() is not None
    assert got.astimezone(dt.UTC) == value.astimezone(dt.UTC)
    assert got.utcoffset() == dt.timedelta(0)  # returned in UTC


async def test_naive_datetime_stays_naive(session, reader):
    value = dt.datetime(2024, 3, 10, 23, 30, 0, 999999)
    got = (await reader.get(AllTypes, (await session.insert(AllTypes(ts=value))).id)).ts
    assert got == value and got.tzinfo is None


async def test_float_column_accepts_int_and_returns_float(session, reader):
    obj = await session.insert(AllTypes(f=3))
    got = (await reader.get(AllTypes, obj.id)).f
    assert got == 3.0 and type(got) is float


async def test_nan_is_not_silently_stored_as_null(session, reader):
    """NaN either round-trips as NaN or is refused; it never turns into NULL."""
    try:
        obj = await session.insert(AllTypes(f=math.nan))
    except ValueTypeError as e:
        assert "AllTypes.f" in str(e)
        return
    got = (await reader.get(AllTypes, obj.id)).f
    assert got is not None and math.isnan(got)


async def test_infinities_round_trip(session, reader):
    for v in (math.inf, -math.inf):
        obj = await session.insert(AllTypes(f=v))
        assert (await reader.get(AllTypes, obj.id)).f == v


async def test_nul_character_in_json_string(engine, session, reader):
    """SQLite keeps a NUL character inside a JSON string; PostgreSQL's JSONB cannot hold one
    and the engine says so with a DataError (never a crash or a silent change)."""
    value = ["a\x00b"]
    if engine.dialect == "sqlite":
        obj = await session.insert(AllTypes(items=value))
        assert (await reader.get(AllTypes, obj.id)).items == value
    else:
        with pytest.raises(DataError):
            await session.insert(AllTypes(items=value))
        assert await reader.query(AllTypes).count() == 0


async def test_json_list_and_dict_are_new_objects(session, reader):
    doc = {"a": [1]}
    obj = await session.insert(AllTypes(doc=doc))
    got = await reader.get(AllTypes, obj.id)
    assert got.doc == doc and got.doc is not doc


async def test_json_scalars_inside_keep_types(session, reader):
    doc = {"int": 1, "float": 1.0, "true": True, "false": False, "none": None, "str": "1"}
    obj = await session.insert(AllTypes(doc=doc))
    got = (await reader.get(AllTypes, obj.id)).doc
    assert _deep_same(got, doc)
    assert got["true"] is True and got["false"] is False and got["none"] is None
    assert type(got["int"]) is int and type(got["float"]) is float


async def test_update_round_trips_types(session, reader):
    obj = await session.insert(AllTypes())
    new = _full_row()
    await session.update(obj, **{f: getattr(new, f) for f in FIELDS})
    got = await reader.get(AllTypes, obj.id)
    for f in FIELDS:
        assert _same(getattr(got, f), getattr(new, f)), f


# ---------------------------------------------------------------- wrong Python types

WRONG = [
    ("i", "12", "str into int"),
    ("i", 1.5, "float into int"),
    ("i", 2.0, "integral float into int"),
    ("i", True, "bool into int"),
    ("big", "9", "str into bigint"),
    ("big", 2**64, "int beyond 64 bits"),
    ("s", 5, "int into str"),
    ("s", b"bytes", "bytes into str"),
    ("f", "1.5", "str into float"),
    ("b", 1, "int into bool"),
    ("b", "true", "str into bool"),
    ("raw", "text", "str into bytes"),
    ("ts", dt.datetime(2024, 1, 1, tzinfo=IST), "aware datetime into naive column"),
    ("ts", dt.date(2024, 1, 1), "date into datetime column"),
    ("ts", "2024-01-01 00:00:00", "str into datetime column"),
    ("tstz", dt.datetime(2024, 1, 1), "naive datetime into aware column"),
    ("d", dt.datetime(2024, 1, 1, 12, 0), "datetime into date column"),
    ("d", "2024-01-01", "str into date column"),
    ("t", dt.datetime(2024, 1, 1, 12, 0), "datetime into time column"),
    ("t", dt.time(1, 2, tzinfo=dt.UTC), "aware time into time column"),
    ("doc", {1, 2}, "set into JSON"),
    ("items", {"a"}, "set into JSON list"),
    ("doc", {"k": {1, 2}}, "set nested in JSON"),
    ("doc", {"when": dt.date(2024, 1, 1)}, "date nested in JSON"),
    ("doc", object(), "object into JSON"),
]


async def test_wrong_type_on_insert_raises_value_type_error(session, reader):
    for field, value, why in WRONG:
        with pytest.raises(ValueTypeError) as ei:
            await session.insert(AllTypes(**{field: value}))
        assert f"AllTypes.{field}" in str(ei.value), (why, str(ei.value))
    assert await reader.query(AllTypes).count() == 0
    # the session is still usable after all those refusals
    assert (await session.insert(AllTypes(i=1))).id is not None


async def test_wrong_type_on_update_and_bulk_paths(session, reader):
    obj = await session.insert(AllTypes(i=1))
    with pytest.raises(ValueTypeError, match=r"AllTypes\.i"):
        await session.update(obj, i="x")
    with pytest.raises(ValueTypeError, match=r"AllTypes\.s"):
        await session.bulk_update(AllTypes, {"s": 3})
    with pytest.raises(ValueTypeError, match=r"AllTypes\.tstz"):
        await reader.query(AllTypes).update(tstz=dt.datetime(2024, 1, 1))
    with pytest.raises(ValueTypeError, match=r"AllTypes\.doc"):
        await session.insert_all([AllTypes(doc={"ok": 1}), AllTypes(doc={1, 2})])
    got = await reader.get(AllTypes, obj.id)
    assert got.i == 1 and got.s is None and got.tstz is None
    assert await reader.query(AllTypes).count() == 1


async def test_wrong_type_in_filter_raises_value_type_error(session, reader):
    with pytest.raises(ValueTypeError, match=r"AllTypes\.i"):
        await reader.query(AllTypes).filter(i="abc").all()
    with pytest.raises(ValueTypeError, match=r"AllTypes\.d"):
        await reader.query(AllTypes).filter(d=dt.datetime(2024, 1, 1)).count()


# ---------------------------------------------------------------- filtering by type


async def test_filter_eq_by_every_type(session, reader):
    target = await session.insert(_full_row())
    await session.insert(AllTypes())  # all NULL
    other = AllTypes(
        i=8,
        big=5,
        s="other",
        f=1.25,
        b=True,
        raw=b"\x01",
        ts=dt.datetime(2020, 1, 1),
        tstz=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        d=dt.date(2020, 1, 1),
        t=dt.time(1),
        doc={"plan": "basic"},
        items=[],
    )
    await session.insert(other)
    full = _full_row()
    for f in ("i", "big", "s", "f", "b", "raw", "ts", "tstz", "d", "t"):
        ids = await reader.query(AllTypes).filter(**{f: getattr(full, f)}).values_list("id", flat=True)
        assert ids == [target.id], f


async def test_filter_aware_datetime_in_other_offset(session, reader):
    obj = await session.insert(AllTypes(tstz=dt.datetime(2024, 1, 1, 22, 0, tzinfo=PST)))
    same_instant = dt.datetime(2024, 1, 2, 11, 30, tzinfo=IST)
    assert await reader.query(AllTypes).filter(tstz=same_instant).values_list("id", flat=True) == [obj.id]


async def test_filter_bool(session, reader):
    t = await session.insert(AllTypes(b=True))
    f = await session.insert(AllTypes(b=False))
    await session.insert(AllTypes(b=None))
    assert await reader.query(AllTypes).filter(b=True).values_list("id", flat=True) == [t.id]
    assert await reader.query(AllTypes).filter(b=False).values_list("id", flat=True) == [f.id]


async def test_filter_large_bigint_and_negative(session, reader):
    a = await session.insert(AllTypes(big=2**63 - 1, i=-5))
    b = await session.insert(AllTypes(big=-(2**63), i=5))
    assert await reader.query(AllTypes).filter(big__gt=2**62).values_list("id", flat=True) == [a.id]
    assert await reader.query(AllTypes).filter(big__lt=0).values_list("id", flat=True) == [b.id]
    assert await reader.query(AllTypes).filter(i__lt=0).values_list("id", flat=True) == [a.id]
    assert await reader.query(AllTypes).max("big") == 2**63 - 1
    assert await reader.query(AllTypes).min("big") == -(2**63)


async def test_ordering_and_gt_on_datetime_with_and_without_microseconds(session, reader):
    base = dt.datetime(2024, 1, 2, 3, 4, 5)
    offsets = [0, 1, 500000, 999999, 1000000, 86400 * 10**6]
    rows = await session.insert_all(
        [AllTypes(i=k, ts=base + dt.timedelta(microseconds=m)) for k, m in enumerate(offsets)]
    )
    assert [r.i for r in rows] == list(range(len(offsets)))
    for k, m in enumerate(offsets):
        pivot = base + dt.timedelta(microseconds=m)
        gt = await reader.query(AllTypes).filter(ts__gt=pivot).order_by("i").values_list("i", flat=True)
        assert gt == list(range(k + 1, len(offsets))), pivot
        lte = await reader.query(AllTypes).filter(ts__lte=pivot).order_by("i").values_list("i", flat=True)
        assert lte == list(range(k + 1)), pivot
    assert await reader.query(AllTypes).order_by("-ts").values_list("i", flat=True) == list(
        reversed(range(len(offsets)))
    )


async def test_gt_on_aware_datetime_across_offsets(session, reader):
    # instants in increasing order, written in offsets that would sort differently as text
    instants = [
        dt.datetime(2024, 1, 1, 20, 0, tzinfo=PST),  # 2024-01-02 04:00 UTC
        dt.datetime(2024, 1, 2, 10, 0, 0, 1, tzinfo=IST),  # 2024-01-02 04:30:00.000001 UTC
        dt.datetime(2024, 1, 2, 5, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, 0, 0, tzinfo=PST),  # 2024-01-02 08:00 UTC
    ]
    await session.insert_all([AllTypes(i=k, tstz=v) for k, v in enumerate(instants)])
    for k, v in enumerate(instants):
        gt = await reader.query(AllTypes).filter(tstz__gt=v).order_by("i").values_list("i", flat=True)
        assert gt == list(range(k + 1, len(instants))), v
        gte_utc = v.astimezone(dt.UTC)
        gte = await reader.query(AllTypes).filter(tstz__gte=gte_utc).order_by("i").values_list("i", flat=True)
        assert gte == list(range(k, len(instants))), v
    assert await reader.query(AllTypes).order_by("tstz").values_list("i", flat=True) == [0, 1, 2, 3]


async def test_gt_on_date(session, reader):
    days = [dt.date(2023, 12, 31), dt.date(2024, 1, 1), dt.date(2024, 2, 29), dt.date(2024, 10, 1)]
    await session.insert_all([AllTypes(i=k, d=v) for k, v in enumerate(days)])
    for k, v in enumerate(days):
        assert await reader.query(AllTypes).filter(d__gt=v).order_by("i").values_list("i", flat=True) == list(
            range(k + 1, len(days))
        )
    assert await reader.query(AllTypes).filter(d__range=(days[1], days[2])).order_by("i").values_list(
        "i", flat=True
    ) == [1, 2]
    assert await reader.query(AllTypes).max("d") == days[-1]


async def test_gt_on_time(session, reader):
    times = [dt.time(0, 0), dt.time(0, 0, 0, 1), dt.time(9, 5), dt.time(9, 5, 0, 500000), dt.time(23, 59, 59, 999999)]
    await session.insert_all([AllTypes(i=k, t=v) for k, v in enumerate(times)])
    for k, v in enumerate(times):
        assert await reader.query(AllTypes).filter(t__gt=v).order_by("i").values_list("i", flat=True) == list(
            range(k + 1, len(times))
        ), v
        assert await reader.query(AllTypes).filter(t=v).values_list("i", flat=True) == [k], v


async def test_filter_float_and_str(session, reader):
    a = await session.insert(AllTypes(f=0.5, s="it's"))
    b = await session.insert(AllTypes(f=-1.5, s=""))
    assert await reader.query(AllTypes).filter(f__gt=0).values_list("id", flat=True) == [a.id]
    assert await reader.query(AllTypes).filter(s="").values_list("id", flat=True) == [b.id]
    assert await reader.query(AllTypes).filter(s="it's").values_list("id", flat=True) == [a.id]


async def test_filter_bytes(session, reader):
    a = await session.insert(AllTypes(raw=b"\x00\xff"))
    await session.insert(AllTypes(raw=b"\x00"))
    assert await reader.query(AllTypes).filter(raw=b"\x00\xff").values_list("id", flat=True) == [a.id]


async def test_filter_json_path(session, reader):
    a = await session.insert(_full_row())
    await session.insert(AllTypes(doc={"plan": "basic"}))
    assert await reader.query(AllTypes).filter(doc__plan="premium").values_list("id", flat=True) == [a.id]
    assert await reader.query(AllTypes).filter(doc__meta__n=1).values_list("id", flat=True) == [a.id]
