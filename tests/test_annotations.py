"""Annotations quoted inside ``Mapped[...]`` in a module without ``from __future__ import
annotations``: ``Mapped["list[Post]"]`` says what ``Mapped[list[Post]]`` would."""

from ormkit import AsyncSession, Base, ForeignKey, Mapped, mapped_column, relationship, selectinload


class QShelf(Base):
    __tablename__ = "q_shelves"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped["str | None"]
    books: Mapped["list[QBook]"] = relationship(back_populates="shelf")


class QBook(Base):
    __tablename__ = "q_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped["int | None"] = mapped_column(ForeignKey("q_shelves.id"))
    shelf: Mapped["QShelf | None"] = relationship(back_populates="books")


def test_quoted_annotations_declare_the_same_relationships():
    books = QShelf.__ormkit_relations__["books"]
    shelf = QBook.__ormkit_relations__["shelf"]
    assert (books.target, books.uselist) == ("QBook", True)
    assert (shelf.target, shelf.uselist) == ("QShelf", False)


async def test_quoted_annotations_load(session):
    await session.insert_all([QShelf(id=1, label=None), QShelf(id=2, label="top")])
    await session.insert_all([QBook(id=10, shelf_id=1), QBook(id=11, shelf_id=1), QBook(id=12, shelf_id=None)])
    fresh = AsyncSession(session.engine)
    shelves = await fresh.query(QShelf).options(selectinload("books")).order_by("id").all()
    assert [[b.id for b in s.books] for s in shelves] == [[10, 11], []]
    assert shelves[0].label is None and shelves[1].label == "top"
    assert all(b.shelf is shelves[0] for b in shelves[0].books)
    (orphan,) = await fresh.query(QBook).filter(shelf_id=None).options(selectinload("shelf")).all()
    assert orphan.shelf is None
