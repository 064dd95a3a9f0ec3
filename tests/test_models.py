"""Model declaration: columns, nullability, defaults, constructor, repr, class-creation errors,
and the DDL of create_all / drop_all (unique constraints, indexes, foreign keys)."""

import datetime as dt
import gc
import itertools
from typing import Optional

import pytest

from ormkit import (
    JSON,
    AsyncSession,
    Base,
    BigInteger,
    FieldError,
    ForeignKey,
    IntegrityError,
    Mapped,
    RelationNotLoaded,
    ValueTypeError,
    mapped_column,
)
from tests.models import Post, User

_counter = itertools.count(1)
_calls: list[int] = []


def _next_code() -> str:
    n = next(_counter)
    _calls.append(n)
    return f"code-{n}"


class MAuthor(Base):
    __tablename__ = "m_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    nickname: Mapped[Optional[str]]  # noqa: UP045 - Optional on purpose
    bio: Mapped[str | None]
    score: Mapped[int] = mapped_column(nullable=True)
    forced: Mapped[int | None] = mapped_column(nullable=False, default=0)
    email: Mapped[str] = mapped_column(unique=True, default=_next_code)
    rank: Mapped[int] = mapped_column(index=True, default=0)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = "draft"
    joined: Mapped[dt.date] = mapped_column(default=lambda: dt.date(2020, 1, 1))


class MArticle(Base):
    """Default foreign key: deleting a referenced author is refused."""

    __tablename__ = "m_articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("m_authors.id"))


class MComment(Base):
    """SET NULL foreign key, one level below MArticle (three tables deep)."""

    __tablename__ = "m_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]
    article_id: Mapped[int | None] = mapped_column(ForeignKey("m_articles.id", ondelete="SET NULL"))


class MBig(Base):
    __tablename__ = "m_big"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    slug: Mapped[str] = mapped_column(unique=True, max_length=50)
    a: Mapped[int] = mapped_column(index=True)
    b: Mapped[str | None] = mapped_column(index=True)


class MGeneric(Base):
    """Parametrised JSON annotations and a string annotation."""

    __tablename__ = "m_generic"

    id: Mapped[int] = mapped_column(primary_key=True)
    counts: Mapped[dict[str, int]] = mapped_column(default=dict)
    names: Mapped[list[str] | None]
    flag: "Mapped[bool]" = False
    blob: Mapped[Optional[bytes]]  # noqa: UP045


# ---------------------------------------------------------------- helpers


async def _tables(engine) -> set[str]:
    if engine.dialect == "sqlite":
        r = await engine.execute("SELECT name FROM sqlite_master WHERE type = 'table'", [])
    else:
        r = await engine.execute("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()", [])
    return set(r.column("name"))


async def _indexes(engine, table: str) -> list[tuple[tuple[str, ...], bool]]:
    """(indexed columns, unique) for every index of ``table``, constraints included."""
    out = []
    if engine.dialect == "sqlite":
        # table-valued pragma functions: a SELECT reloads a schema changed by another pooled
        # connection, a bare PRAGMA statement does not
        r = await engine.execute(
            'SELECT il.name AS idx, il."unique" AS uniq, ii.name AS col FROM pragma_index_list(?) AS il '
            "JOIN pragma_index_info(il.name) AS ii ORDER BY il.name, ii.seqno",
            [table],
        )
        found: dict[str, tuple[list[str], bool]] = {}
        for row in r.all():
            found.setdefault(row["idx"], ([], bool(row["uniq"])))[0].append(row["col"])
        out = [(tuple(cols), uniq) for cols, uniq in found.values()]
    else:
        rows = await engine.execute("SELECT indexdef FROM pg_indexes WHERE tablename = $1", [table])
        for (indexdef,) in rows.tuples():
            cols = indexdef[indexdef.rindex("(") + 1 : indexdef.rindex(")")]
            out.append((tuple(c.strip().strip('"') for c in cols.split(",")), "UNIQUE INDEX" in indexdef.upper()))
    return out


def _author(**kw):
    kw.setdefault("name", "Ann")
    return MAuthor(**kw)


# ---------------------------------------------------------------- nullability


async def test_optional_and_union_none_columns_accept_none(session, reader):
    a = await session.insert(_author(nickname=None, bio=None, score=None))
    got = await reader.get(MAuthor, a.id)
    assert got.nickname is None and got.bio is None and got.score is None


async def test_nullable_columns_keep_values(session, reader):
    a = await session.insert(_author(nickname="nick", bio="b", score=7))
    got = await reader.get(MAuthor, a.id)
    assert (got.nickname, got.bio, got.score) == ("nick", "b", 7)


async def test_none_into_non_nullable_column_raises_value_type_error(session):
    with pytest.raises(ValueTypeError, match=r"MAuthor\.name"):
        await session.insert(MAuthor(name=None))
    assert await session.query(MAuthor).count() == 0


async def test_missing_non_nullable_field_raises_value_type_error(session):
    with pytest.raises(ValueTypeError, match=r"MAuthor\.name"):
        await session.insert(MAuthor())


async def test_explicit_nullable_false_overrides_optional_annotation(session):
    with pytest.raises(ValueTypeError, match=r"MAuthor\.forced"):
        await session.insert(_author(forced=None))


async def test_shared_model_nullability(session, reader):
    with pytest.raises(ValueTypeError, match=r"User\.email"):
        await session.insert(User(name="A"))
    u = await session.insert(User(name="A", email="a@x", age=None))
    assert (await reader.get(User, u.id)).age is None


async def test_update_to_none_on_non_nullable_raises(session, reader):
    a = await session.insert(_author())
    with pytest.raises(ValueTypeError, match=r"MAuthor\.name"):
        await session.update(a, name=None)
    assert (await reader.get(MAuthor, a.id)).name == "Ann"


async def test_not_null_in_ddl(engine):
    if engine.dialect == "sqlite":
        r = await engine.execute('SELECT name, "notnull" FROM pragma_table_info(?)', ["m_authors"])
        notnull = {row["name"]: bool(row["notnull"]) for row in r.all()}
    else:
        r = await engine.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = $1",
            ["m_authors"],
        )
        notnull = {row["column_name"]: row["is_nullable"] == "NO" for row in r.all()}
    assert notnull["name"] and notnull["forced"] and notnull["email"] and notnull["rank"]
    assert not notnull["nickname"] and not notnull["bio"] and not notnull["score"]


async def test_parametrised_json_and_string_annotations(session, reader):
    g = await session.insert(MGeneric(names=["a", "b"], blob=b"\x00"))
    got = await reader.get(MGeneric, g.id)
    assert got.counts == {} and got.names == ["a", "b"] and got.flag is False and got.blob == b"\x00"
    h = await session.insert(MGeneric(counts={"x": 2}, flag=True))
    got = await reader.get(MGeneric, h.id)
    assert got.counts == {"x": 2} and got.names is None and got.flag is True and got.blob is None
    with pytest.raises(ValueTypeError, match=r"MGeneric\.counts"):
        await session.insert(MGeneric(counts=None))


# ---------------------------------------------------------------- defaults


def test_value_defaults_applied_at_construction():
    a = MAuthor(name="x")
    assert a.status == "draft"
    assert a.rank == 0
    assert a.forced == 0
    assert a.bio is None and a.nickname is None and a.id is None


def test_callable_defaults_called_per_instance():
    a, b = MAuthor(name="a"), MAuthor(name="b")
    assert a.tags == [] and b.tags == []
    assert a.tags is not b.tags
    assert a.email != b.email
    assert a.joined == dt.date(2020, 1, 1)


def test_callable_default_not_called_when_value_given():
    before = len(_calls)
    a = MAuthor(name="a", email="given@x")
    assert a.email == "given@x"
    assert len(_calls) == before


def test_explicit_value_overrides_default():
    a = MAuthor(name="a", status="live", tags=["t"], rank=5)
    assert (a.status, a.tags, a.rank) == ("live", ["t"], 5)


async def test_defaults_persist(session, reader):
    a = await session.insert(MAuthor(name="a"))
    got = await reader.get(MAuthor, a.id)
    assert got.status == "draft"
    assert got.tags == []
    assert got.rank == 0
    assert got.joined == dt.date(2020, 1, 1)
    assert got.email == a.email and got.email.startswith("code-")


async def test_shared_model_defaults(session, reader):
    u = await session.insert(User(name="A", email="a@x"))
    got = await reader.get(User, u.id)
    assert got.role == "member" and got.vip is False and got.metadata == {}
    assert User(name="a", email="b").metadata is not User(name="a", email="c").metadata


# ---------------------------------------------------------------- constructor and repr


def test_unknown_keyword_raises_type_error_naming_model_and_field():
    with pytest.raises(TypeError) as ei:
        MAuthor(name="a", bogus_field=1)
    msg = str(ei.value)
    assert "MAuthor" in msg and "bogus_field" in msg


def test_unknown_keyword_on_shared_model():
    with pytest.raises(TypeError, match=r"User.*nmae|nmae.*User"):
        User(nmae="typo")


def test_positional_arguments_rejected():
    with pytest.raises(TypeError, match=r"MAuthor\(\) takes keyword arguments only.*fields are: id, name"):
        MAuthor("a")


def test_a_model_with_its_own_init_keeps_it():
    """The engine's constructor stands in for Base.__init__ only; a model's own __init__ runs,
    and super().__init__ still validates and fills defaults."""

    class MOwnInit(Base):
        __tablename__ = "m_own_init"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        tag: Mapped[str] = mapped_column(default="t")

        def __init__(self, name: str, **kw: object) -> None:
            super().__init__(name=name.upper(), **kw)

    o = MOwnInit("abc")
    assert (o.name, o.tag, o.id) == ("ABC", "t", None)
    with pytest.raises(TypeError, match="bogus"):
        MOwnInit("x", bogus=1)


def test_subclass_of_a_model_constructs_like_its_parent():
    class MChildOfAuthor(MAuthor):
        pass

    c = MChildOfAuthor(name="n")
    assert c.name == "n" and type(c) is MChildOfAuthor
    with pytest.raises(TypeError, match="MChildOfAuthor.*bogus"):
        MChildOfAuthor(bogus=1)


def test_constructor_sets_attributes():
    a = MAuthor(name="n", bio="b", score=3)
    assert (a.name, a.bio, a.score) == ("n", "b", 3)


def test_repr_of_new_instance():
    r = repr(User(name="A", email="a@x"))
    assert r.startswith("User(")
    assert "name='A'" in r and "email='a@x'" in r


async def test_repr_after_insert(session, reader):
    u = await session.insert(User(name="A", email="a@x", age=3))
    r = repr(u)
    assert r.startswith(f"User(id={u.id}, name='A'")
    assert "email='a@x'" in r and "age=3" in r
    assert repr(await reader.get(User, u.id)) == r


def test_unloaded_relationship_raises_relation_not_loaded():
    with pytest.raises(RelationNotLoaded, match=r"posts"):
        _ = User(name="a", email="b").posts


def test_model_instances_are_independent():
    a, b = MAuthor(name="a"), MAuthor(name="b")
    a.name = "changed"
    assert b.name == "b"


# ---------------------------------------------------------------- class-creation errors


def test_unsupported_annotation_set():
    with pytest.raises(TypeError) as ei:

        class MBadSet(Base):
            __tablename__ = "m_bad_set"
            id: Mapped[int] = mapped_column(primary_key=True)
            tags: Mapped[set]

    assert "MBadSet" in str(ei.value) and "tags" in str(ei.value)


def test_unsupported_annotation_complex():
    with pytest.raises(TypeError) as ei:

        class MBadComplex(Base):
            __tablename__ = "m_bad_complex"
            id: Mapped[int] = mapped_column(primary_key=True)
            z: Mapped[complex]

    assert "MBadComplex" in str(ei.value) and ".z" in str(ei.value)


def test_union_of_two_types_rejected():
    with pytest.raises(TypeError) as ei:

        class MBadUnion(Base):
            __tablename__ = "m_bad_union"
            id: Mapped[int] = mapped_column(primary_key=True)
            v: Mapped[int | str]

    assert "MBadUnion" in str(ei.value) and "v" in str(ei.value)


def test_annotation_without_mapped_rejected():
    with pytest.raises(TypeError) as ei:

        class MBadPlain(Base):
            __tablename__ = "m_bad_plain"
            id: Mapped[int] = mapped_column(primary_key=True)
            x: int

    assert "MBadPlain" in str(ei.value) and "x" in str(ei.value)


def test_annotation_contradicting_type_marker_rejected():
    with pytest.raises(TypeError) as ei:

        class MBadMarker(Base):
            __tablename__ = "m_bad_marker"
            id: Mapped[int] = mapped_column(primary_key=True)
            s: Mapped[str] = mapped_column(BigInteger)

    assert "MBadMarker" in str(ei.value) and "s" in str(ei.value)


def test_model_without_primary_key():
    with pytest.raises(FieldError) as ei:

        class MNoPk(Base):
            __tablename__ = "m_no_pk"
            name: Mapped[str]

    assert "MNoPk" in str(ei.value)
    assert "primary key" in str(ei.value).lower()


def test_foreign_key_without_dot():
    with pytest.raises(FieldError) as ei:

        class MBadFk(Base):
            __tablename__ = "m_bad_fk"
            id: Mapped[int] = mapped_column(primary_key=True)
            ref: Mapped[int] = mapped_column(ForeignKey("nodot"))

    msg = str(ei.value)
    assert "MBadFk" in msg and "ref" in msg and "nodot" in msg


def test_foreign_key_bad_ondelete():
    with pytest.raises(FieldError) as ei:

        class MBadOnDelete(Base):
            __tablename__ = "m_bad_ondelete"
            id: Mapped[int] = mapped_column(primary_key=True)
            ref: Mapped[int] = mapped_column(ForeignKey("m_authors.id", ondelete="EXPLODE"))

    msg = str(ei.value)
    assert "MBadOnDelete" in msg and "ref" in msg and "EXPLODE" in msg


def test_foreign_key_bad_onupdate():
    with pytest.raises(FieldError) as ei:

        class MBadOnUpdate(Base):
            __tablename__ = "m_bad_onupdate"
            id: Mapped[int] = mapped_column(primary_key=True)
            ref: Mapped[int] = mapped_column(ForeignKey("m_authors.id", onupdate="SOMETIMES"))

    assert "MBadOnUpdate" in str(ei.value) and "ref" in str(ei.value)


def test_two_primary_keys():
    with pytest.raises(FieldError) as ei:

        class MTwoPk(Base):
            __tablename__ = "m_two_pk"
            id: Mapped[int] = mapped_column(primary_key=True)
            id2: Mapped[int] = mapped_column(primary_key=True)

    assert "MTwoPk" in str(ei.value)


def test_bad_max_length():
    with pytest.raises(TypeError):

        class MBadLen(Base):
            __tablename__ = "m_bad_len"
            id: Mapped[int] = mapped_column(primary_key=True)
            s: Mapped[str] = mapped_column(max_length=0)


async def test_failed_classes_are_not_registered(engine):
    """A class that failed to build never reaches the schema: create_all still works and makes
    none of its tables."""
    for bad in (
        test_unsupported_annotation_set,
        test_model_without_primary_key,
        test_foreign_key_without_dot,
        test_foreign_key_bad_ondelete,
        test_two_primary_keys,
    ):
        bad()
    await engine.create_all()
    tables = await _tables(engine)
    assert not {"m_bad_set", "m_no_pk", "m_bad_fk", "m_bad_ondelete", "m_two_pk"} & tables
    assert {"m_authors", "m_articles", "m_comments", "m_big"} <= tables


# ---------------------------------------------------------------- create_all: constraints and indexes


async def test_create_all_creates_tables(engine):
    tables = await _tables(engine)
    assert {"t_users", "t_posts", "t_orders", "t_all_types", "m_authors", "m_articles", "m_comments", "m_big"} <= tables


async def test_create_all_is_idempotent(engine, session):
    await session.insert(_author())
    await engine.create_all()
    await engine.create_all(MAuthor, MArticle)
    assert await session.query(MAuthor).count() == 1


async def test_unique_constraint_violation_raises_integrity_error(session):
    await session.insert(User(name="A", email="same@x"))
    with pytest.raises(IntegrityError):
        await session.insert(User(name="B", email="same@x"))
    assert await session.query(User).count() == 1
    # the session stays usable
    await session.insert(User(name="C", email="other@x"))
    assert await session.query(User).count() == 2


async def test_unique_on_module_model(session):
    await session.insert(MBig(slug="s", a=1))
    with pytest.raises(IntegrityError):
        await session.insert(MBig(slug="s", a=2))


async def test_unique_and_index_in_schema(engine):
    users = await _indexes(engine, "t_users")
    assert (("email",), True) in users
    assert (("age",), False) in users
    big = await _indexes(engine, "m_big")
    assert (("slug",), True) in big
    assert (("a",), False) in big
    assert (("b",), False) in big
    authors = await _indexes(engine, "m_authors")
    assert (("email",), True) in authors
    assert (("rank",), False) in authors
    # columns without unique/index get no index
    indexed = {c for cols, _ in authors for c in cols}
    assert "name" not in indexed and "bio" not in indexed


async def test_big_integer_primary_key(session, reader):
    m = await session.insert(MBig(slug="x", a=1))
    assert isinstance(m.id, int)
    m2 = await session.insert(MBig(id=2**40, slug="y", a=2))
    assert (await reader.get(MBig, 2**40)).slug == "y"
    assert m2.id == 2**40


# ---------------------------------------------------------------- drop_all


async def test_drop_all_drops_every_table(engine, session):
    u = await session.insert(User(name="A", email="a@x"))
    await session.insert(Post(title="p", author_id=u.id))
    a = await session.insert(_author())
    art = await session.insert(MArticle(title="t", author_id=a.id))
    await session.insert(MComment(text="c", article_id=art.id))
    await engine.drop_all()
    assert not ({"t_users", "t_posts", "m_authors", "m_articles", "m_comments"} & await _tables(engine))


async def test_drop_all_given_models_drops_children_first(engine, session):
    a = await session.insert(_author())
    art = await session.insert(MArticle(title="t", author_id=a.id))
    await session.insert(MComment(text="c", article_id=art.id))
    # parents named first: the engine must still drop the children first
    await engine.drop_all(MAuthor, MArticle, MComment)
    tables = await _tables(engine)
    assert not ({"m_authors", "m_articles", "m_comments"} & tables)
    assert {"t_users", "t_posts"} <= tables


async def test_drop_then_create_again(engine, session, reader):
    await session.insert(_author())
    await engine.drop_all(MComment, MArticle, MAuthor)
    await engine.create_all(MAuthor, MArticle, MComment)
    assert await session.query(MAuthor).count() == 0
    a = await session.insert(_author())
    assert (await reader.get(MAuthor, a.id)).name == "Ann"


# ---------------------------------------------------------------- foreign keys


async def test_foreign_key_missing_parent_raises_integrity_error(session):
    with pytest.raises(IntegrityError):
        await session.insert(Post(title="orphan", author_id=987654))
    assert await session.query(Post).count() == 0


async def test_foreign_key_ondelete_cascade(session):
    u1 = await session.insert(User(name="A", email="a@x"))
    u2 = await session.insert(User(name="B", email="b@x"))
    await session.insert_all([Post(title=f"p{i}", author_id=u1.id) for i in range(3)])
    keep = await session.insert(Post(title="keep", author_id=u2.id))
    assert await session.remove(u1) is True
    remaining = await session.query(Post).all()
    assert [p.id for p in remaining] == [keep.id]


async def test_foreign_key_ondelete_cascade_via_query_delete(session):
    u = await session.insert(User(name="A", email="a@x"))
    await session.insert(Post(title="p", author_id=u.id))
    assert await session.query(User).filter(id=u.id).delete() == 1
    assert await session.query(Post).count() == 0


async def test_foreign_key_default_refuses_delete_of_referenced_row(session, reader):
    a = await session.insert(_author())
    await session.insert(MArticle(title="t", author_id=a.id))
    with pytest.raises(IntegrityError):
        await session.remove(a)
    assert await reader.get(MAuthor, a.id) is not None


async def test_foreign_key_ondelete_set_null(session, reader):
    a = await session.insert(_author())
    art = await session.insert(MArticle(title="t", author_id=a.id))
    c = await session.insert(MComment(text="c", article_id=art.id))
    assert await session.remove(art) is True
    assert (await reader.get(MComment, c.id)).article_id is None


async def test_foreign_key_update_to_missing_parent(session, reader):
    u = await session.insert(User(name="A", email="a@x"))
    p = await session.insert(Post(title="p", author_id=u.id))
    with pytest.raises(IntegrityError):
        await session.update(p, author_id=u.id + 1000)
    assert (await reader.get(Post, p.id)).author_id == u.id


async def test_two_sessions_on_one_engine(engine):
    s1, s2 = AsyncSession(engine), AsyncSession(engine)
    a = await s1.insert(_author())
    assert (await s2.get(MAuthor, a.id)).name == "Ann"


def test_defining_a_model_does_not_run_its_finalizer():
    finalized = []

    class Finalized(Base):
        __tablename__ = "t_finalized"

        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

        def __del__(self) -> None:
            finalized.append(self.__dict__.get("name", "<unset>"))

    gc.collect()
    assert finalized == []
    f = Finalized(id=1, name="kept")
    assert f.name == "kept"
    del f
    gc.collect()
    assert finalized == ["kept"]


def test_a_model_cannot_be_the_base_of_another_table():
    class SharedParent(Base):
        __tablename__ = "t_shared_parent"

        id: Mapped[int] = mapped_column(primary_key=True)
        status: Mapped[str] = mapped_column(default="new")

    with pytest.raises(TypeError, match=r"SharedChild derives from the model SharedParent.*plain mixin"):

        class SharedChild(SharedParent):
            __tablename__ = "t_shared_child"

    # The parent is untouched, and a mixin shares columns as intended.
    assert SharedParent().status == "new"

    class StatusMixin:
        status: Mapped[str] = mapped_column(default="new")

    class MixedIn(StatusMixin, Base):
        __tablename__ = "t_mixed_in"

        id: Mapped[int] = mapped_column(primary_key=True)

    assert MixedIn().status == "new" and MixedIn.__ormkit_fields__ == ("status", "id")
