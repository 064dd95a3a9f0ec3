from tests.models import User


async def test_insert_and_get(session):
    u = await session.insert(User(name="Alice", email="alice@example.com", age=30))
    assert isinstance(u.id, int)
    got = await session.get(User, u.id)
    assert got.name == "Alice" and got.age == 30 and got.metadata == {}
