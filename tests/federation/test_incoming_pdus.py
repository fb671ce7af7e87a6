from __future__ import annotations
import pytest_twisted
from tests.federation.incoming_fakes import Hearth, BOB

@pytest_twisted.ensureDeferred
async def test_smoke(db) -> None:
    hs = await Hearth(db).start()
    room = await hs.create_room("12")
    join = await hs.join_remote(room)
    print(await hs.traces(), await hs.timeline(room))
    assert join in await hs.timeline(room)
