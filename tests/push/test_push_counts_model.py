"""The notification store against a plain model: random events, receipts (threaded and not) and
reads, interleaved, on both engines. The store keeps counts in memory and counts only what is
new (storage/notifications.py); the model counts everything again each time, so any drift in
the cached counts, the moves they carry or the listings shows up as a difference."""

from __future__ import annotations

import random

import pytest_twisted

from storage.database import Database
from storage.notifications import UNTHREADED, EventNotifications, NotificationStore, ReadMark

USERS = ["@a:hs", "@b:hs", "@ab:hs", "@c:hs"]  # @a:hs is a prefix of @ab:hs on purpose
ROOMS = ["!r1:hs", "!r2:hs"]
THREADS = ["main", "$t1", "$t2"]


class Model:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, dict[str, bool]]] = []  # stream, room, thread, user->hl
        self.positions: dict[tuple[str, str, str], int] = {}

    def unread(self, user: str, room: str, thread: str, stream: int) -> bool:
        return all(stream > self.positions.get((user, room, t), -1) for t in (UNTHREADED, thread))

    def counts(self, user: str, rooms: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for stream, room, thread, users in self.rows:
            if room in rooms and user in users and self.unread(user, room, thread, stream):
                n, h = out.get((room, thread), (0, 0))
                out[(room, thread)] = (n + 1, h + users[user])
        return out


@pytest_twisted.ensureDeferred
async def test_store_matches_model(db: Database) -> None:
    rnd = random.Random(4)
    store, model = NotificationStore(db), Model()
    stream = 0
    for step in range(400):
        op = rnd.random()
        if op < 0.45:
            adds, marks = [], []
            for _ in range(rnd.randint(1, 4)):
                stream += 1
                room, thread = rnd.choice(ROOMS), rnd.choice(THREADS)
                notified = {u: rnd.random() < 0.3 for u in USERS if rnd.random() < 0.7}
                if notified:
                    groups = [([u for u, hl in notified.items() if hl == flag],
                               ["notify"] + ([{"set_tweak": "highlight"}] if flag else []), flag)
                              for flag in (False, True)]
                    adds.append(EventNotifications(room, thread, f"${stream}", stream, stream,
                                                   [g for g in groups if g[0]]))
                    model.rows.append((stream, room, thread, notified))
                if rnd.random() < 0.5:  # the sender's own event reads its thread
                    sender = rnd.choice(USERS)
                    marks.append(ReadMark(sender, room, thread, stream))
            await store.write_batch(adds, marks, stream)
            for m in marks:
                key = (m.user_id, m.room_id, m.thread_id)
                model.positions[key] = max(model.positions.get(key, -1), m.stream_ordering)
        elif op < 0.65:
            user, room = rnd.choice(USERS), rnd.choice(ROOMS)
            thread = rnd.choice([UNTHREADED, *THREADS])
            upto = rnd.randint(max(0, stream - 10), stream) if stream else 0
            before = model.counts(user, [room])
            await store.mark_read(user, room, thread, upto)
            key = (user, room, thread)
            model.positions[key] = max(model.positions.get(key, -1), upto)
            after = model.counts(user, [room])
            assert sum(n for n, _ in before.values()) >= sum(n for n, _ in after.values())
        else:
            asks = [(u, rnd.sample(ROOMS, rnd.randint(1, 2))) for u in rnd.sample(USERS, 3)]
            if rnd.random() < 0.3:  # a /sync wake-up's warm-up first: the same counts after
                await store.warm([u for u, _ in asks], asks[0][1][0])
            got = await store.unread_counts_many(asks)
            assert got == [model.counts(u, rooms) for u, rooms in asks], f"step {step}"
    for user in USERS:
        expected = model.counts(user, ROOMS)
        assert await store.unread_counts(user, ROOMS) == expected
        assert await store.unread_total(user, ROOMS) == sum(n for n, _ in expected.values())
        # A fresh store (as after a restart) counts the same from the database alone.
        assert await NotificationStore(db).unread_counts(user, ROOMS) == expected
        listed = await store.list(user, ROOMS, None, 1000)
        mine = [(s, r, t, u[user]) for s, r, t, u in model.rows if user in u]
        assert [(n.stream_ordering, n.room_id, n.thread_id, n.highlight) for n in listed] == \
            sorted(mine, reverse=True)
        assert [n.unread for n in listed] == [model.unread(user, r, t, s) for s, r, t, _ in
                                              sorted(mine, reverse=True)]
        pending = await store.unread_after(user, ROOMS, 0, 1000)
        assert [n.stream_ordering for n in pending] == [
            s for s, r, t, _ in sorted(mine) if model.unread(user, r, t, s)]
        assert await store.unread_total(user, ROOMS, upto=stream // 2) == sum(
            1 for s, r, t, _ in mine if s <= stream // 2 and model.unread(user, r, t, s))
