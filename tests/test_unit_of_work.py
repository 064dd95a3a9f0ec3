"""The unit of work with relationships: what flush()/commit() writes when loaded relationships
change, checked by reading the database back through a second session.

Covers moves between parents, remove-then-add, clearing with ``= []``, self-referential trees,
text primary keys, foreign keys to a non-key unique column, deleted objects, two queries over one
row, streaming, ``begin()`` / savepoints, failed flushes and ``rollback()``. After a commit that
wrote, a second commit must write nothing. Models and seed data come from
``tests/test_relationships.py`` (tables ``r_``).
"""

from __future__ import annotations

import gc
import weakref

import pytest

from ormkit import AsyncSession, IntegrityError, InterfaceError, joinedload, selectinload
from tests.test_relationships import (
    RAuthor,
    RAuthorGroup,
    RBook,
    RCity,
    RComment,
    RCountry,
    RGroup,
    RLang,
    RMessage,
    RNode,
    RPost,
    RTag,
    authors,
    by_id,
    ids,
    posts,
    seed,
)


class Boom(Exception):
    pass


async def nothing_left(engine, session) -> None:
    """A commit right after one that wrote sends no statement at all."""
    with engine.query_log() as log:
        await session.commit()
    assert log.statements == []


async def group_ids(engine, author_id: int) -> list[int]:
    (a,) = await AsyncSession(engine).query(RAuthor).filter(id=author_id).options(selectinload("groups")).all()
    return sorted(g.id for g in a.groups)


async def post_owner(engine) -> dict[int, int | None]:
    return {p.id: p.author_id for p in await AsyncSession(engine).query(RPost).all()}


async def link_count(engine, **filters) -> int:
    return await AsyncSession(engine).query(RAuthorGroup).filter(**filters).count()


# ---------------------------------------------------------------------------------------------
# moves between parents
# ---------------------------------------------------------------------------------------------


async def rotation(session) -> dict[int, RAuthor]:
    """Authors 1..3 with eight posts each (post ``10 * a + i`` belongs to author ``a``), loaded
    with their posts. Many moves in one flush, so the identity map's order cannot hide a bug."""
    await session.insert_all([RAuthor(id=a, name=f"a{a}") for a in (1, 2, 3)])
    await session.insert_all([RPost(id=10 * a + i, title="t", author_id=a) for a in (1, 2, 3) for i in range(8)])
    return await authors(session, selectinload("posts"))


async def test_children_moved_around_between_parents(engine, session):
    """Children moved between parents through the collections (taken out of one, put in the
    next) get the new parent's key."""
    a = await rotation(session)
    moving = {n: list(a[n].posts) for n in (1, 2, 3)}
    for n, children in moving.items():
        for c in children:
            a[n].posts.remove(c)
            a[n % 3 + 1].posts.append(c)
    await session.commit()
    owner = await post_owner(engine)
    assert owner == {c.id: n % 3 + 1 for n, cs in moving.items() for c in cs}
    assert all(c.author is a[n % 3 + 1] for n, cs in moving.items() for c in cs)
    await nothing_left(engine, session)


async def test_children_appended_to_another_parent(engine, session):
    """Appending a child to another parent's collection moves it (README: ``p.author_id`` is set),
    without taking it out of the old parent's collection first."""
    a = await rotation(session)
    moving = {n: list(a[n].posts) for n in (1, 2, 3)}
    for n, children in moving.items():
        a[n % 3 + 1].posts.extend(children)
    await session.commit()
    owner = await post_owner(engine)
    assert owner == {c.id: n % 3 + 1 for n, cs in moving.items() for c in cs}
    await nothing_left(engine, session)


async def test_children_moved_when_their_many_to_one_was_loaded(engine, session):
    """With each child's ``author`` loaded by a query of its own, moves through the collections
    are written, both ways, in one flush."""
    await seed(session)
    a = await authors(session, selectinload("posts"))
    await posts(session, joinedload("author"))
    alice, bob, carol = a[1], a[2], a[3]
    p = by_id(alice.posts)
    p21 = bob.posts[0]
    alice.posts.remove(p[11])
    bob.posts.append(p[11])
    bob.posts.remove(p21)
    alice.posts.append(p21)
    carol.posts.append(p[12])  # not taken out of alice.posts: moved all the same
    await session.commit()
    owner = await post_owner(engine)
    assert (owner[11], owner[21], owner[12], owner[13]) == (2, 1, 3, 1)
    assert p[11].author is bob and p21.author is alice and p[12].author is carol
    await nothing_left(engine, session)


async def test_many_to_one_reassigned_after_a_query_of_the_children(engine, session):
    """``post.author = other`` moves the post; both loaded collections follow in memory."""
    await seed(session)
    a = await authors(session, selectinload("posts"))
    p = await posts(session, joinedload("author"))
    p[11].author = a[2]
    p[12].author = RAuthor(name="dave")
    await session.commit()
    owner = await post_owner(engine)
    assert owner[11] == 2 and owner[12] == p[12].author.id != 1
    assert 11 in ids(a[2].posts) and ids(a[1].posts) == [13]
    await nothing_left(engine, session)


async def test_many_to_one_reassigned_when_filled_by_back_populates(engine, session):
    """A child's many-to-one filled in by loading the parent's collection is loaded: reassigning
    it moves the child, and both loaded collections follow (as after a query of the children)."""
    await seed(session)
    a = await authors(session, selectinload("posts"))
    alice, bob = a[1], a[2]
    p11 = by_id(alice.posts)[11]
    p11.author = bob
    await session.commit()
    assert (await post_owner(engine))[11] == 2
    assert 11 in ids(bob.posts)
    assert 11 not in ids(alice.posts)


# ---------------------------------------------------------------------------------------------
# remove / re-add, clearing
# ---------------------------------------------------------------------------------------------


async def test_removed_then_added_again(engine, session):
    """Taking an object out and putting it back before a flush writes nothing; doing it across
    two flushes unlinks, then links again (one association row)."""
    await seed(session)
    a = await authors(session, selectinload("posts"), selectinload("groups"))
    alice = a[1]
    p11, g1 = by_id(alice.posts)[11], by_id(alice.groups)[1]
    alice.posts.remove(p11)
    alice.groups.remove(g1)
    alice.posts.append(p11)
    alice.groups.append(g1)
    await nothing_left(engine, session)
    alice.posts.remove(p11)
    alice.groups.remove(g1)
    await session.commit()
    assert (await post_owner(engine))[11] is None
    assert await group_ids(engine, 1) == [2]
    alice.posts.append(p11)
    alice.groups.append(g1)
    await session.commit()
    assert (await post_owner(engine))[11] == 1
    assert await group_ids(engine, 1) == [1, 2]
    assert await link_count(engine, author_id=1, group_id=1) == 1
    assert p11.author is alice
    await nothing_left(engine, session)


async def test_link_removed_from_both_sides_is_deleted_once(engine, session):
    await seed(session)
    a = await authors(session, selectinload("groups"))
    g = by_id(await session.query(RGroup).options(selectinload("members")).all())
    a[1].groups.remove(g[2])
    g[2].members.remove(a[1])
    with engine.query_log() as log:
        await session.commit()
    assert len([q for q in log.statements if q.startswith("DELETE")]) == 1
    assert await group_ids(engine, 1) == [1] and await group_ids(engine, 2) == [2]
    await nothing_left(engine, session)


async def test_clearing_loaded_collections_with_an_empty_list(engine, session):
    """``= []`` on a loaded collection unlinks every member: association rows are deleted,
    children's keys NULLed; the other side follows in memory."""
    await seed(session)
    a = await authors(session, selectinload("posts"), selectinload("groups"))
    g = by_id(await session.query(RGroup).options(selectinload("members")).all())
    alice = a[1]
    old_posts = list(alice.posts)
    alice.posts = []
    alice.groups = []
    await session.commit()
    owner = await post_owner(engine)
    assert [owner[i] for i in (11, 12, 13)] == [None, None, None]
    assert await link_count(engine, author_id=1) == 0
    assert await link_count(engine, author_id=2) == 1
    assert all(p.author is None for p in old_posts)
    assert [m.name for m in g[2].members] == ["bob"] and g[1].members == []
    await nothing_left(engine, session)


async def test_clearing_a_never_loaded_collection_raises(engine, session):
    """A collection that was never loaded cannot be diffed, ``= []`` included: the flush raises
    rather than leave the rows linked while the object says it has none."""
    await seed(session)
    alice = await session.get(RAuthor, 1)
    alice.groups = []
    try:
        with pytest.raises(InterfaceError, match=r"RAuthor\.groups.*never loaded"):
            await session.commit()
    finally:
        assert await group_ids(engine, 1) == [1, 2]


async def test_collection_replaced_after_a_child_was_inserted_by_key(engine, session):
    """A row inserted through the session has no children at first; once a child is inserted
    with its key, replacing the parent's collection must unlink that child, or refuse (never
    loaded): it must not stay linked while the parent's list says otherwise."""
    parent = await session.insert(RAuthor(name="eve"))
    await session.insert(RPost(title="by key", author_id=parent.id))
    parent.posts = [RPost(title="through the list")]
    refused = False
    try:
        await session.commit()
    except InterfaceError:
        refused = True  # never loaded: acceptable, if nothing was written
    titles = sorted(p.title for p in await AsyncSession(engine).query(RPost).filter(author_id=parent.id).all())
    assert titles == (["by key"] if refused else ["through the list"])


# ---------------------------------------------------------------------------------------------
# unlinking rules of one-to-many, deleted objects
# ---------------------------------------------------------------------------------------------


async def test_child_taken_from_one_relation_and_put_in_another(engine, session):
    """A message taken out of ``alice.sent`` while put in ``bob.received`` still leaves
    ``sent``; its sender_id is NOT NULL, so the flush raises and writes nothing."""
    await seed(session)
    a = await authors(session, selectinload("sent"), selectinload("received"))
    await session.query(RMessage).options(joinedload("sender"), joinedload("recipient")).all()
    alice, bob = a[1], a[2]
    m4 = by_id(alice.sent)[4]
    alice.sent.remove(m4)
    bob.received.append(m4)
    try:
        with pytest.raises(InterfaceError, match=r"RAuthor\.sent.*NOT NULL"):
            await session.commit()
    finally:
        (fresh,) = await AsyncSession(engine).query(RMessage).filter(id=4).all()
        assert (fresh.sender_id, fresh.recipient_id) == (1, 3)


async def test_removing_a_child_whose_key_cannot_be_null_writes_nothing(engine, session):
    """The NOT NULL check runs before any statement: the other changes of that flush are not
    written either, and they stay pending once the child is put back."""
    await seed(session)
    p = await posts(session, selectinload("comments"), selectinload("tags"))
    tags = by_id(await session.query(RTag).all())
    c = p[11].comments.pop()
    p[11].tags.append(tags[3])
    with pytest.raises(InterfaceError, match=r"RComment\.post_id is NOT NULL"):
        await session.commit()
    assert await AsyncSession(engine).query(RComment).filter(post_id=11).count() == 2
    assert sorted(ids((await posts(AsyncSession(engine), selectinload("tags")))[11].tags)) == [1, 2]
    p[11].comments.append(c)
    await session.commit()
    assert sorted(ids((await posts(AsyncSession(engine), selectinload("tags")))[11].tags)) == [1, 2, 3]
    await nothing_left(engine, session)


async def test_deleted_child_taken_out_of_its_collection(engine, session):
    """A child deleted with ``session.remove`` (as the NOT NULL error advises) and then taken out
    of its collection to keep memory in step needs no unlinking: the commit neither raises nor
    writes."""
    await seed(session)
    p = await posts(session, selectinload("comments"))
    c101 = by_id(p[11].comments)[101]
    assert await session.remove(c101)
    p[11].comments.remove(c101)
    await session.commit()
    assert ids(await AsyncSession(engine).query(RComment).order_by("id").all()) == [102, 103]


async def test_collections_changed_on_deleted_objects(engine, session):
    """An object deleted with ``session.remove`` is no longer tracked: changing its collections
    afterwards writes nothing (its association rows went with the database's cascade)."""
    await seed(session)
    p = await posts(session, selectinload("tags"))
    g = by_id(await session.query(RGroup).options(selectinload("members")).all())
    tags = by_id(await session.query(RTag).all())
    a3 = await session.get(RAuthor, 3)
    assert await session.remove(p[11])
    assert await session.remove(g[2])
    p[11].tags.append(tags[3])
    g[2].members.append(a3)
    await session.commit()
    assert await AsyncSession(engine).query(RPost).filter(id=11).count() == 0
    assert await link_count(engine, group_id=2) == 0
    assert await link_count(engine, author_id=3) == 0
    await nothing_left(engine, session)


# ---------------------------------------------------------------------------------------------
# new related objects
# ---------------------------------------------------------------------------------------------


async def test_new_child_with_an_explicit_key_is_inserted(engine, session):
    """A new object (one the session never read or wrote) appended with an explicit primary key
    is inserted, not updated."""
    await seed(session)
    alice = (await authors(session, selectinload("posts")))[1]
    alice.posts.append(RPost(id=50, title="explicit"))
    await session.commit()
    got = await AsyncSession(engine).query(RPost).filter(id=50).all()
    assert [(p.title, p.author_id) for p in got] == [("explicit", 1)]


async def test_new_target_with_an_explicit_key_is_inserted(engine, session):
    """A new many-to-many target appended with an explicit primary key is inserted, then linked."""
    await seed(session)
    alice = (await authors(session, selectinload("groups")))[1]
    alice.groups.append(RGroup(id=60, name="explicit"))
    await session.commit()
    assert await group_ids(engine, 1) == [1, 2, 60]


async def test_new_target_linked_from_both_sides_gets_one_row(engine, session):
    """A new group built with ``members=[alice]`` and appended to ``alice.groups`` is one link."""
    await seed(session)
    alice = (await authors(session, selectinload("groups")))[1]
    alice.groups.append(RGroup(name="both", members=[alice]))
    await session.commit()
    g = await AsyncSession(engine).query(RGroup).filter(name="both").one()
    assert await link_count(engine, author_id=1, group_id=g.id) == 1


async def test_new_target_appended_twice_gets_one_row(engine, session):
    """The same object appended twice is one link, whether it is new or not."""
    await seed(session)
    carol = (await authors(session, selectinload("groups")))[3]
    old = await session.get(RGroup, 3)
    new = RGroup(name="twice")
    carol.groups.extend([old, old, new, new])
    await session.commit()
    assert await link_count(engine, author_id=3, group_id=3) == 1
    assert await link_count(engine, author_id=3, group_id=new.id) == 1


# ---------------------------------------------------------------------------------------------
# self-referential, text keys, non-key unique references
# ---------------------------------------------------------------------------------------------


async def seed_tree(session) -> dict[int, RNode]:
    """``1 root -> (2 a -> 4 a1), (3 b)``, loaded with every node's children and parent."""
    await session.insert_all(
        [
            RNode(id=1, name="root", parent_id=None),
            RNode(id=2, name="a", parent_id=1),
            RNode(id=3, name="b", parent_id=1),
            RNode(id=4, name="a1", parent_id=2),
        ]
    )
    if session.engine.dialect == "postgresql":
        await session.execute_raw("SELECT setval(pg_get_serial_sequence('r_nodes', 'id'), 10)")
    return by_id(await session.query(RNode).options(selectinload("children"), joinedload("parent")).all())


async def parents_of(engine) -> dict[int, int | None]:
    return {n.id: n.parent_id for n in await AsyncSession(engine).query(RNode).all()}


async def test_self_referential_move_unlink_and_add(engine, session):
    """In a tree, moving a node to another parent's children, unlinking one and adding a new one
    write the parent keys; each node's ``parent`` follows."""
    n = await seed_tree(session)
    n[2].children.remove(n[4])
    n[3].children.append(n[4])  # a1 moves under b
    n[1].children.remove(n[3])  # b becomes a root
    n[2].children.append(RNode(name="a2"))
    await session.commit()
    got = await parents_of(engine)
    assert {k: got[k] for k in (1, 2, 3, 4)} == {1: None, 2: 1, 3: None, 4: 3}
    (a2,) = [k for k in got if k > 4]
    assert got[a2] == 2
    assert n[4].parent is n[3] and n[3].parent is None
    await nothing_left(engine, session)


async def test_self_referential_parent_assignment(engine, session):
    """``node.parent = other`` moves a node (also under its own former sibling); the loaded
    children lists follow."""
    n = await seed_tree(session)
    n[4].parent = n[1]
    n[3].parent = n[2]
    await session.commit()
    got = await parents_of(engine)
    assert (got[4], got[3]) == (1, 2)
    assert sorted(ids(n[1].children)) == [2, 4] and ids(n[2].children) == [3]
    await nothing_left(engine, session)


async def test_self_referential_moves_with_only_children_loaded(engine, session):
    """Moves in a tree when only ``children`` were loaded (each node's ``parent`` filled in by
    back_populates): two roots swap their eight children each."""
    await session.insert_all([RNode(id=1, name="r1"), RNode(id=2, name="r2")])
    await session.insert_all([RNode(id=10 * r + i, name="n", parent_id=r) for r in (1, 2) for i in range(8)])
    n = by_id(await session.query(RNode).options(selectinload("children")).all())
    one, two = list(n[1].children), list(n[2].children)
    n[1].children, n[2].children = two, one
    await session.commit()
    got = await parents_of(engine)
    assert {k: got[k] for k in ids(one)} == dict.fromkeys(ids(one), 2)
    assert {k: got[k] for k in ids(two)} == dict.fromkeys(ids(two), 1)


async def by_code(session) -> dict[str, RLang]:
    return {x.code: x for x in await session.query(RLang).options(selectinload("books")).all()}


async def test_text_primary_key(engine, session):
    """Relations over a text primary key: books move between languages through the collections
    and through ``book.lang``, are unlinked and added."""
    await session.insert_all([RLang(code="en", name="English"), RLang(code="fr", name="French")])
    await session.insert_all([RBook(lang_code="en"), RBook(lang_code="en"), RBook(lang_code="fr")])
    langs = await by_code(session)
    b = by_id(await session.query(RBook).options(joinedload("lang")).all())
    en, fr = langs["en"], langs["fr"]
    en.books.remove(b[1])
    en.books.remove(b[2])
    fr.books.append(b[2])
    fr.books.append(RBook())
    await session.commit()
    got = {x.id: x.lang_code for x in await AsyncSession(engine).query(RBook).all()}
    assert got == {1: None, 2: "fr", 3: "fr", 4: "fr"}
    assert b[1].lang is None and b[2].lang is fr and ids(fr.books) == [3, 2, 4]
    await nothing_left(engine, session)
    b[3].lang = en
    await session.commit()
    fresh = await by_code(AsyncSession(engine))
    assert ids(fresh["en"].books) == [3] and sorted(ids(fresh["fr"].books)) == [2, 4]
    assert ids(en.books) == [3]
    await nothing_left(engine, session)


async def test_new_parent_with_a_text_key_is_inserted_first(engine, session):
    """``book.lang = RLang(code=...)``: the new language is inserted before the book points at it."""
    await session.insert(RLang(code="en", name="English"))
    await session.insert(RBook(lang_code="en"))
    (book,) = await session.query(RBook).options(joinedload("lang")).all()
    book.lang = RLang(code="de", name="German")
    await session.commit()
    (de,) = await AsyncSession(engine).query(RLang).filter(code="de").options(selectinload("books")).all()
    assert (de.name, ids(de.books)) == ("German", [book.id])


async def test_foreign_key_to_a_unique_column(engine, session):
    """Relations over a foreign key to a unique non-key column (``iso``): the key written is the
    parent's ``iso``, not its id."""
    await session.insert_all([RCountry(iso="fr"), RCountry(iso="de")])
    c = {x.iso: x for x in await session.query(RCountry).options(selectinload("cities")).all()}
    fr, de = c["fr"], c["de"]
    fr.cities.extend([RCity(name="Paris"), RCity(name="Lyon")])
    await session.commit()
    await nothing_left(engine, session)
    cities = {x.name: x for x in await session.query(RCity).options(joinedload("country")).all()}
    fr.cities.remove(cities["Lyon"])
    de.cities.append(cities["Lyon"])
    de.cities.append(RCity(name="Berlin"))
    cities["Paris"].country = de
    await session.commit()
    got = {x.name: x.country_iso for x in await AsyncSession(engine).query(RCity).all()}
    assert got == {"Paris": "de", "Lyon": "de", "Berlin": "de"}
    assert fr.cities == [] and cities["Lyon"].country is de
    await nothing_left(engine, session)


async def test_new_parent_referenced_by_a_unique_column_is_inserted_first(engine, session):
    """``city.country = RCountry(iso=...)`` inserts the new country before the city points at it."""
    await session.insert(RCountry(iso="fr"))
    await session.insert(RCity(name="Paris", country_iso="fr"))
    (paris,) = await session.query(RCity).options(joinedload("country")).all()
    paris.country = RCountry(iso="it")
    await session.commit()
    assert (await AsyncSession(engine).get(RCity, paris.id)).country_iso == "it"
    assert await AsyncSession(engine).query(RCountry).filter(iso="it").count() == 1


# ---------------------------------------------------------------------------------------------
# many-to-one that was never loaded
# ---------------------------------------------------------------------------------------------


async def test_many_to_one_set_to_none_without_loading_it(engine, session):
    """``post.author = None`` NULLs the key even when the author was never loaded, as assigning
    an author there does."""
    await seed(session)
    p = await session.get(RPost, 11)
    p.author = None
    await session.commit()
    assert (await post_owner(engine))[11] is None


# ---------------------------------------------------------------------------------------------
# the identity map: two queries, streaming
# ---------------------------------------------------------------------------------------------


async def test_same_row_read_by_two_queries(engine, session):
    """Two queries reaching one row give one object, so a change made through either is one
    change, written once."""
    await seed(session)
    a = await authors(session, selectinload("posts"))
    p = await posts(session, joinedload("author"))
    assert p[11] is by_id(a[1].posts)[11] and p[11].author is a[1]
    p[11].author = a[2]
    p[11].title = "moved"
    with engine.query_log() as log:
        await session.commit()
    assert len([q for q in log.statements if q.startswith("UPDATE")]) == 1
    fresh = await AsyncSession(engine).get(RPost, 11)
    assert (fresh.title, fresh.author_id) == ("moved", 2)
    assert 11 in ids(a[2].posts) and 11 not in ids(a[1].posts)
    await nothing_left(engine, session)


async def test_a_query_after_a_flush_sees_the_written_relations(engine, session):
    """Reading the rows again after a relationship flush gives the same objects, with the
    collections as written, and leaves nothing to write."""
    await seed(session)
    a = await authors(session, selectinload("groups"))
    g3 = await session.get(RGroup, 3)
    a[1].groups.append(g3)
    await session.commit()
    again = await authors(session, selectinload("groups"))
    assert again[1] is a[1] and sorted(ids(a[1].groups)) == [1, 2, 3]
    await nothing_left(engine, session)


async def test_unflushed_collection_change_survives_a_second_query(engine, session):
    """A row read again keeps the user's unflushed changes, a collection the second query loads
    again included: the appended group is still written."""
    await seed(session)
    alice = (await authors(session, selectinload("groups")))[1]
    g3 = await session.get(RGroup, 3)
    alice.groups.append(g3)
    assert (await authors(session, selectinload("groups")))[1] is alice
    await session.commit()
    assert await group_ids(engine, 1) == [1, 2, 3]


async def test_a_second_query_leaves_the_children_of_a_changed_collection_alone(engine, session):
    """Loading a collection again while the user's change to it is unflushed keeps the change,
    and the children the database still lists under that parent are not pointed back at it:
    the post moved (and reassigned) stays with its new author, and that is what is written."""
    await seed(session)
    a = await authors(session, selectinload("posts"))
    p11 = by_id(a[1].posts)[11]
    a[1].posts.remove(p11)
    a[2].posts.append(p11)
    p11.author = a[2]
    again = await authors(session, selectinload("posts"))
    assert again[1] is a[1] and sorted(ids(a[1].posts)) == [12, 13]
    assert p11.author is a[2]
    assert all(p.author is a[1] for p in a[1].posts)
    await session.commit()
    assert (await post_owner(engine))[11] == 2
    assert sorted(ids((await authors(AsyncSession(engine), selectinload("posts")))[1].posts)) == [12, 13]


async def test_streamed_rows_are_the_sessions_objects(engine, session):
    """With the identity map on, ``stream()`` hands out the session's object for a row it holds."""
    await seed(session)
    held = await session.get(RPost, 11)
    streamed = {p.id: p async for p in session.query(RPost).order_by("id").stream(batch_size=2)}
    assert streamed[11] is held


async def test_a_change_to_a_streamed_object_is_written(engine, session):
    """A change made to a streamed object is written by the next commit."""
    await seed(session)
    streamed = [p async for p in session.query(RPost).order_by("id").stream(batch_size=2)]
    streamed[1].title = "from the stream"
    await session.commit()
    assert (await AsyncSession(engine).get(RPost, streamed[1].id)).title == "from the stream"


async def test_a_row_streamed_again_keeps_unflushed_changes(engine, session):
    """Streaming rows the session holds brings them up to date except for the user's unflushed
    changes, which are still written; the stream's objects carry no relation change."""
    await seed(session)
    alice = (await authors(session, selectinload("groups")))[1]
    g3 = await session.get(RGroup, 3)
    alice.groups.append(g3)
    alice.name = "mine"
    await AsyncSession(engine).bulk_update(RAuthor, {"name": "theirs"}, id=2)
    streamed = {a.id: a async for a in session.query(RAuthor).order_by("id").stream(batch_size=1)}
    assert streamed[1] is alice and streamed[2].name == "theirs"
    await session.commit()
    fresh = await authors(AsyncSession(engine))
    assert (fresh[1].name, fresh[2].name) == ("mine", "theirs")
    assert await group_ids(engine, 1) == [1, 2, 3]
    await nothing_left(engine, session)


async def test_streamed_objects_can_be_linked(engine, session):
    """Objects from a stream have their keys: they can be put in a loaded collection."""
    await seed(session)
    carol = (await authors(session, selectinload("groups")))[3]
    carol.groups.extend([g async for g in session.query(RGroup).order_by("id").stream(batch_size=2)])
    await session.commit()
    assert await group_ids(engine, 3) == [1, 2, 3]
    await nothing_left(engine, session)


async def test_the_map_does_not_keep_objects_with_loaded_relations_alive(engine, session):
    """The map holds objects weakly, loaded relationships or not: once the user drops them, they
    are gone, and the session has nothing of theirs to write."""
    await seed(session)
    alive = weakref.ref((await authors(session, selectinload("posts")))[1])
    gc.collect()
    with engine.query_log() as log:
        await session.commit()
    assert log.statements == []
    assert (await AsyncSession(engine).get(RAuthor, 1)).name == "alice"
    assert alive() is None


async def test_rows_of_objects_the_collector_frees_leave_the_map_with_them(engine, session):
    """Parents and their loaded children refer to one another, so only the cyclic collector
    frees them; when it does, the session's map lets go of their rows then (not at whatever the
    session does next), while rows of objects still held stay tracked and written."""
    await session.insert_all([RAuthor(id=i, name=f"a{i}") for i in range(1, 401)])
    await session.insert_all([RPost(id=10 * i + k, title="t", author_id=i) for i in range(1, 401) for k in range(3)])
    kept = await session.get(RAuthor, 7)
    loaded = await session.query(RAuthor).options(selectinload("posts")).all()
    assert loaded[0].posts[0].author is loaded[0]
    assert len(session._identity) == 1600
    del loaded
    gc.collect()
    # The author held stays, with the posts its loaded collection holds.
    assert len(session._identity) == 4
    kept.name = "still written"
    await session.commit()
    assert (await AsyncSession(engine).get(RAuthor, 7)).name == "still written"


# ---------------------------------------------------------------------------------------------
# begin(), failed flushes, rollback()
# ---------------------------------------------------------------------------------------------


async def test_relationship_changes_inside_begin(engine, session):
    """Inside ``begin()`` the changes are written when the block ends; a block that raises
    writes none of them, not even what a flush inside it sent."""
    await seed(session)
    async with session.begin():
        a = await authors(session, selectinload("groups"), selectinload("posts"))
        g3 = await session.get(RGroup, 3)
        a[1].groups.append(g3)
        a[3].posts.append(RPost(title="in begin"))
    assert await group_ids(engine, 1) == [1, 2, 3]
    assert [p.title for p in await AsyncSession(engine).query(RPost).filter(author_id=3).all()] == ["in begin"]
    await nothing_left(engine, session)
    with pytest.raises(Boom):
        async with session.begin():
            a = await authors(session, selectinload("groups"))
            a[2].groups.append(g3)
            a[2].groups.remove(by_id(a[2].groups)[2])
            await session.flush()
            raise Boom
    assert await group_ids(engine, 2) == [2]
    assert not session.in_transaction
    await nothing_left(engine, session)


async def test_failed_flush_writes_nothing_and_can_be_retried(engine, session):
    """A flush that fails in the database writes none of its statements; the changes stay
    pending, and once the bad value is fixed the next commit writes them all, once."""
    await seed(session)
    a = await authors(session, selectinload("groups"), selectinload("posts"))
    alice, carol = a[1], a[3]
    g3 = await session.get(RGroup, 3)
    alice.groups.append(g3)
    alice.groups.remove(by_id(alice.groups)[1])
    carol.posts.append(RPost(title="new"))
    p30 = await session.get(RPost, 30)
    p30.author_id = 999  # no such author: the foreign key fails
    with pytest.raises(IntegrityError):
        await session.commit()
    assert await group_ids(engine, 1) == [1, 2]
    assert await AsyncSession(engine).query(RPost).filter(author_id=3).count() == 0
    p30.author_id = None
    await session.commit()
    assert await group_ids(engine, 1) == [2, 3]
    assert await link_count(engine, author_id=1, group_id=3) == 1
    assert [p.title for p in await AsyncSession(engine).query(RPost).filter(author_id=3).all()] == ["new"]
    await nothing_left(engine, session)


async def test_failed_flush_in_begin_rolls_back(engine, session):
    """A flush that fails when ``begin()`` ends rolls back everything in the block, including
    what an earlier flush in the block wrote; the session forgets its objects."""
    await seed(session)
    with pytest.raises(IntegrityError):
        async with session.begin():
            a = await authors(session, selectinload("groups"))
            g3 = await session.get(RGroup, 3)
            a[1].groups.append(g3)
            await session.flush()
            a[2].groups.append(g3)
            p30 = await session.get(RPost, 30)
            p30.author_id = 999  # no such author: the foreign key fails
    assert await group_ids(engine, 1) == [1, 2]
    assert await group_ids(engine, 2) == [2]
    assert not session.in_transaction
    await nothing_left(engine, session)
    a = await authors(session, selectinload("groups"))
    assert sorted(ids(a[1].groups)) == [1, 2]


async def test_failed_flush_in_a_savepoint_leaves_the_outer_transaction_usable(engine, session):
    """A savepoint whose flush fails is rolled back to; with the exception caught, the outer
    block still commits its own work."""
    await seed(session)
    async with session.begin():
        a = await authors(session, selectinload("groups"))
        g3 = await session.get(RGroup, 3)
        a[1].groups.append(g3)
        await session.flush()
        with pytest.raises(IntegrityError):
            async with session.begin():
                p30 = await session.get(RPost, 30)
                p30.author_id = 999
    assert await group_ids(engine, 1) == [1, 2, 3]


async def test_rollback_forgets_relationship_changes(engine, session):
    """``rollback()`` drops unflushed relationship changes and what a flush in the transaction
    wrote; objects read afterwards carry the database's state and nothing is pending."""
    await seed(session)
    a = await authors(session, selectinload("groups"))
    g3 = await session.get(RGroup, 3)
    a[1].groups.append(g3)  # never flushed
    await session.rollback()
    await nothing_left(engine, session)
    assert await group_ids(engine, 1) == [1, 2]
    async with session.begin():
        a = await authors(session, selectinload("groups"), selectinload("posts"))
        a[2].groups.append(g3)
        a[2].posts.append(RPost(title="rolled back"))
        await session.flush()
        await session.rollback()
    assert await group_ids(engine, 2) == [2]
    assert await AsyncSession(engine).query(RPost).filter(title="rolled back").count() == 0
    fresh = await authors(session, selectinload("groups"), selectinload("posts"))
    assert fresh[2] is a[2]  # still the session's object, brought back in line by the read
    assert ids(fresh[2].groups) == [2] and ids(fresh[2].posts) == [21]
    await nothing_left(engine, session)
