"""The load, identical for every server: setup (not measured), warm-up, then measured phases.

Each measured phase also records how busy the CPUs were: the load client itself, the server
process (all its threads) and the whole machine (which includes PostgreSQL), so a reader can
tell whether the server, the database or the client was the limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp

from loadclient import Client, RequestFailed, User, percentile, q
from servers import Server, pg_backends_cpu, system_cpu


@dataclass(frozen=True)
class Params:
    senders: int = 20            # users sending concurrently into one room
    sends_per_user: int = 100    # messages each sender sends, one after another
    room_events: int = 1000      # messages in the /messages room
    messages_limit: int = 50     # page size for /messages
    messages_walks: int = 10     # full back-paginations through the room
    rooms_sequential: int = 100  # rooms created one after another by one user
    rooms_concurrent: int = 100  # rooms created by `room_makers` users at once
    room_makers: int = 4
    joiners: int = 200           # users joining one public room
    join_concurrency: int = 20   # joins in flight at once
    sync_rooms: int = 100        # rooms of the initial-sync user
    sync_room_messages: int = 100  # messages in each of them (another member sends them)
    fill_workers: int = 16       # rooms created at once for the sync user (not measured)
    fill_senders: int = 32       # messages sent at once into those rooms (not measured)
    initial_syncs: int = 10      # measured initial syncs, each from a new device
    incremental_syncs: int = 50  # measured incremental syncs with nothing new, each a new device
    delivery_messages: int = 20  # messages sent to the long-polling receivers (the joiners)
    delivery_spacing_s: float = 0.2   # between the starts of two sends
    delivery_lost_after_s: float = 10.0  # a message not seen by then counts as lost
    delivery_settle_s: float = 20.0   # at most this long for the receivers' syncs to calm down
    push_rounds: int = 5         # push on/off comparison: rounds of (on, off) Hearth servers
    phase_seconds: float = 90.0  # a measured phase stops early after this long
    quiet_wait_s: float = 15.0   # how long to wait for other work on the machine to calm down

    @staticmethod
    def quick() -> "Params":
        return Params(sends_per_user=15, room_events=1000, messages_walks=2, rooms_sequential=15,
                      rooms_concurrent=16, joiners=60, sync_rooms=20, sync_room_messages=30,
                      initial_syncs=3, incremental_syncs=10, delivery_messages=10,
                      delivery_settle_s=10.0, phase_seconds=30.0,
                      quiet_wait_s=10.0)


class Meter:
    """Wall time and CPU use of the client, the server process, its PostgreSQL backends and the
    whole machine over a phase."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.requests = 0

    def __enter__(self) -> "Meter":
        self.d0 = pg_backends_cpu(self.server.pg_name) if self.server.pg_name else {}
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.s0 = self.server.cpu_seconds()
        self.m0 = system_cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.c0
        self.server_cpu = self.server.cpu_seconds() - self.s0
        d1 = pg_backends_cpu(self.server.pg_name) if self.server.pg_name else {}
        # backends that went away meanwhile are lost; new ones count from zero
        self.db_cpu = sum(max(0.0, v - self.d0.get(pid, 0.0)) for pid, v in d1.items())
        busy1, total1 = system_cpu()
        busy0, total0 = self.m0
        self.machine_busy = (busy1 - busy0) / max(1.0, total1 - total0)

    def report(self) -> dict[str, float]:
        ncpu = os.cpu_count() or 1
        return {
            "requests": self.requests,
            "wall_s": round(self.wall, 3),
            # 1.0 = one core fully busy
            "client_cpu_cores": round(self.client_cpu / self.wall, 3),
            "server_cpu_cores": round(self.server_cpu / self.wall, 3),
            "db_cpu_cores": round(self.db_cpu / self.wall, 3),
            "machine_cpu_cores": round(self.machine_busy * ncpu, 3),
            # whatever else ran meanwhile (other users of the machine)
            "other_cpu_cores": round(max(0.0, self.machine_busy * ncpu - (
                self.client_cpu + self.server_cpu + self.db_cpu) / self.wall), 3),
        }


def ms(values: list[float], p: float) -> float:
    return round(percentile(values, p) * 1000.0, 2)


async def run_workers(n: int, work: Callable[[int], Awaitable[None]]) -> None:
    await asyncio.gather(*(work(i) for i in range(n)))


async def register_users(client: Client, prefix: str, count: int, concurrency: int = 8) -> list[User]:
    users: list[User | None] = [None] * count
    nxt = iter(range(count))

    async def worker(_: int) -> None:
        for i in nxt:
            users[i] = await client.register(f"{prefix}{i:04d}")
    await run_workers(min(concurrency, count), worker)
    return [u for u in users if u is not None]


class Bench:
    """All scenarios against one running server."""

    def __init__(self, server: Server, params: Params, log: Callable[[str], None]) -> None:
        self.server = server
        self.p = params
        self.log = log
        self.results: dict[str, Any] = {}
        self.phases: dict[str, Any] = {}

    SCENARIOS = ("send", "messages", "create", "join", "initial_sync", "incremental_sync",
                 "delivery")

    async def run(self, only: tuple[str, ...] = SCENARIOS) -> dict[str, Any]:
        p = self.p
        scenarios = {"send": self.send, "messages": self.messages, "create": self.create_rooms,
                     "join": self.joins, "initial_sync": self.initial_sync,
                     "incremental_sync": self.incremental_sync, "delivery": self.delivery}
        async with Client(self.server.base_url) as c:
            t0 = time.perf_counter()
            full = "join" in only
            self.owner = (await register_users(c, "owner", 1))[0]
            self.senders = await register_users(c, "sender", p.senders)
            self.makers = await register_users(c, "maker", p.room_makers) if full else []
            self.joiners = await register_users(c, "joiner", p.joiners) if full else []
            self.results["setup_register_s"] = round(time.perf_counter() - t0, 2)
            self.log(f"  registered {1 + len(self.senders) + len(self.makers) + len(self.joiners)} "
                     f"users in {self.results['setup_register_s']}s")
            for name in only:
                fn = scenarios[name]
                before = c.error_count
                t = time.perf_counter()
                await fn(c)
                cpu = "; ".join(f"{ph}: server {r['server_cpu_cores']}, db {r['db_cpu_cores']}, "
                                f"client {r['client_cpu_cores']}, other {r['other_cpu_cores']} "
                                f"cores over {r['wall_s']}s"
                                for ph, r in self.phases.items() if ph.startswith(name))
                self.log(f"  {name}: done in {time.perf_counter() - t:.1f}s ({cpu})")
                if c.error_count > before:
                    self.results[f"{name}_errors"] = c.error_count - before
            self.results["errors"] = c.error_count
            self.results["error_samples"] = c.errors
        self.results["phases"] = self.phases
        return self.results

    # 1. send throughput -------------------------------------------------------------------------

    async def send(self, c: Client) -> None:
        p = self.p
        room = (await c.must("POST", "/createRoom", self.owner,
                             {"preset": "public_chat", "name": "send bench"}))["room_id"]
        for u in self.senders:
            r = await c.join(u, room)
            if not r.ok:
                raise RequestFailed(f"join for send bench: {r.status} {r.body[:200]!r}")

        async def warm(i: int) -> None:
            for k in range(3):
                await c.send_text(self.senders[i], room, f"warm-up {k}")
        await run_workers(p.senders, warm)

        latencies: list[float] = []
        failed = 0
        deadline = time.perf_counter() + p.phase_seconds

        async def sender(i: int) -> None:
            nonlocal failed
            u = self.senders[i]
            for k in range(p.sends_per_user):
                if time.perf_counter() > deadline:
                    return
                r = await c.send_text(u, room, f"message {k} from {i}")
                if r.ok:
                    latencies.append(r.seconds)
                else:
                    failed += 1
        with Meter(self.server) as m:
            await run_workers(p.senders, sender)
        m.requests = len(latencies) + failed
        self.phases["send"] = m.report()
        self.results.update({
            "send_msgs_per_s": round(len(latencies) / m.wall, 1),
            "send_p50_ms": ms(latencies, 50), "send_p99_ms": ms(latencies, 99),
            "send_count": len(latencies), "send_failed": failed,
            "send_truncated": len(latencies) + failed < p.senders * p.sends_per_user,
        })

    # 2. /messages in a 1,000-event room ---------------------------------------------------------

    async def messages(self, c: Client) -> None:
        p = self.p
        room = (await c.must("POST", "/createRoom", self.owner,
                             {"preset": "public_chat", "name": "history bench"}))["room_id"]
        # Fill the room (not measured): the owner sends from several connections at once.
        t0 = time.perf_counter()
        nxt = iter(range(p.room_events))

        async def filler(_: int) -> None:
            for k in nxt:
                r = await c.send_text(self.owner, room, f"history message {k}")
                if not r.ok:
                    raise RequestFailed(f"filling history room: {r.status} {r.body[:200]!r}")
        await run_workers(8, filler)
        self.results["setup_fill_s"] = round(time.perf_counter() - t0, 2)
        reader = self.senders[0]
        await c.must("POST", f"/rooms/{q(room)}/join", reader, {})

        async def walk(latencies: list[float] | None) -> int:
            token: str | None = None
            events = 0
            for _ in range(p.room_events // p.messages_limit + 10):
                r = await c.messages(reader, room, p.messages_limit, token)
                if not r.ok:
                    raise RequestFailed(f"/messages: {r.status} {r.body[:200]!r}")
                if latencies is not None:
                    latencies.append(r.seconds)
                body = r.json()
                events += len(body.get("chunk", []))
                token = body.get("end")
                if not token or not body.get("chunk"):
                    break
            return events

        seen = await walk(None)  # warm-up, and a check that the whole room comes back
        self.results["messages_events_seen"] = seen
        latencies: list[float] = []
        first_page: list[float] = []
        deadline = time.perf_counter() + p.phase_seconds
        with Meter(self.server) as m:
            for _ in range(p.messages_walks):
                if time.perf_counter() > deadline:
                    break
                n0 = len(latencies)
                await walk(latencies)
                first_page.append(latencies[n0])
        m.requests = len(latencies)
        self.phases["messages"] = m.report()
        self.results.update({
            "messages_p50_ms": ms(latencies, 50), "messages_p99_ms": ms(latencies, 99),
            "messages_first_page_p50_ms": ms(first_page, 50),
            "messages_requests": len(latencies),
            "messages_req_per_s": round(len(latencies) / m.wall, 1),
        })

    # 3. room creation ---------------------------------------------------------------------------

    async def create_rooms(self, c: Client) -> None:
        p = self.p
        await c.must("POST", "/createRoom", self.owner, {"name": "warm-up room"})
        latencies: list[float] = []
        deadline = time.perf_counter() + p.phase_seconds
        with Meter(self.server) as m:
            for i in range(p.rooms_sequential):
                if time.perf_counter() > deadline:
                    break
                r = await c.create_room(self.owner, name=f"room {i}", topic="bench")
                if r.ok:
                    latencies.append(r.seconds)
        m.requests = len(latencies)
        self.phases["create_sequential"] = m.report()
        self.results.update({
            "create_rooms_per_s": round(len(latencies) / m.wall, 2),
            "create_p50_ms": ms(latencies, 50), "create_p99_ms": ms(latencies, 99),
            "create_count": len(latencies),
        })

        made: list[float] = []
        per_maker = max(1, p.rooms_concurrent // p.room_makers)
        deadline = time.perf_counter() + p.phase_seconds

        async def maker(i: int) -> None:
            for k in range(per_maker):
                if time.perf_counter() > deadline:
                    return
                r = await c.create_room(self.makers[i], name=f"room {i}-{k}", topic="bench")
                if r.ok:
                    made.append(r.seconds)
        with Meter(self.server) as m:
            await run_workers(p.room_makers, maker)
        m.requests = len(made)
        self.phases["create_concurrent"] = m.report()
        self.results.update({
            "create_concurrent_rooms_per_s": round(len(made) / m.wall, 2),
            "create_concurrent_p50_ms": ms(made, 50), "create_concurrent_p99_ms": ms(made, 99),
        })

    # 4. 200 users join one public room ----------------------------------------------------------

    async def joins(self, c: Client) -> None:
        p = self.p
        room = (await c.must("POST", "/createRoom", self.owner,
                             {"preset": "public_chat", "name": "join bench"}))["room_id"]
        warm = (await c.must("POST", "/createRoom", self.owner,
                             {"preset": "public_chat", "name": "join warm-up"}))["room_id"]
        for u in self.senders[:3]:
            await c.join(u, warm)
        latencies: list[float] = []
        failed = 0
        nxt = iter(self.joiners)
        deadline = time.perf_counter() + p.phase_seconds

        async def joiner(_: int) -> None:
            nonlocal failed
            for u in nxt:
                if time.perf_counter() > deadline:
                    return
                r = await c.join(u, room)
                if r.ok:
                    latencies.append(r.seconds)
                else:
                    failed += 1
        with Meter(self.server) as m:
            await run_workers(p.join_concurrency, joiner)
        m.requests = len(latencies) + failed
        self.phases["join"] = m.report()
        members = await c.must("GET", f"/rooms/{q(room)}/joined_members", self.owner)
        self.results.update({
            "join_per_s": round(len(latencies) / m.wall, 1),
            "join_p50_ms": ms(latencies, 50), "join_p99_ms": ms(latencies, 99),
            "join_count": len(latencies), "join_failed": failed,
            "join_members_after": len(members.get("joined", {})),
        })
        self.join_room = room
        self.join_members = set(members.get("joined", {}))

    # 5. initial sync of a user in 100 rooms of 100 messages -------------------------------------

    async def initial_sync(self, c: Client) -> None:
        p = self.p
        self.syncer = (await register_users(c, "syncer", 1))[0]
        workers = min(p.fill_workers, p.sync_rooms)
        fillers = await register_users(c, "filler", workers)
        # Fill (not measured): another user creates each room, the sync user joins it, and the
        # creator sends its messages. Rooms are created `fill_workers` at once, each worker with
        # its own user (one user's concurrent createRooms can collide in Hearth: see README).
        # The messages go room after room, `fill_senders` at once: several sends into the same
        # room let Synapse batch their persistence, which fills it ~1.5x faster than one sender
        # per room (it makes no difference to Hearth, which creates one event at a time).
        t0 = time.perf_counter()
        rooms: list[tuple[User, str]] = []
        nxt = iter(range(p.sync_rooms))

        async def create(w: int) -> None:
            for i in nxt:
                room = (await c.must("POST", "/createRoom", fillers[w],
                                     {"preset": "public_chat", "name": f"sync room {i}"}))["room_id"]
                await c.must("POST", f"/rooms/{q(room)}/join", self.syncer, {})
                rooms.append((fillers[w], room))
        await run_workers(workers, create)
        sends = iter([(i, k) for i in range(len(rooms)) for k in range(p.sync_room_messages)])

        async def fill(_: int) -> None:
            for i, k in sends:
                sender, room = rooms[i]
                r = await c.send_text(sender, room, f"sync room {i} message {k}")
                if not r.ok:
                    raise RequestFailed(f"filling sync rooms: {r.status} {r.body[:200]!r}")
        await run_workers(p.fill_senders, fill)
        self.results["setup_sync_fill_s"] = round(time.perf_counter() - t0, 2)
        # One new device per initial sync (logged in beforehand): Synapse keeps a finished /sync
        # response for two minutes by default, keyed on user, device, token and filter, so the
        # same request again would be answered from that cache; a new client never gets that.
        devices = [await c.login(self.syncer.user_id) for _ in range(p.initial_syncs + 1)]
        warm = await c.sync(devices[0])  # warm-up, not measured
        if not warm.ok:
            raise RequestFailed(f"initial /sync: {warm.status} {warm.body[:200]!r}")
        latencies: list[float] = []
        sizes: list[int] = []
        deadline = time.perf_counter() + p.phase_seconds
        last = warm
        with Meter(self.server) as m:
            for dev in devices[1:]:
                if time.perf_counter() > deadline:
                    break
                r = await c.sync(dev)
                if r.ok:
                    latencies.append(r.seconds)
                    sizes.append(len(r.body))
                    last = r
        body = last.json() or {}
        joined = body.get("rooms", {}).get("join", {})
        self.results["initial_sync_timeline_events"] = sum(
            len(v.get("timeline", {}).get("events", [])) for v in joined.values())
        self.sync_token = body.get("next_batch")
        m.requests = len(latencies)
        self.phases["initial_sync"] = m.report()
        self.results.update({
            "initial_sync_p50_ms": ms(latencies, 50), "initial_sync_p99_ms": ms(latencies, 99),
            "initial_sync_mean_ms": round(sum(latencies) / len(latencies) * 1000, 2)
            if latencies else float("nan"),
            "initial_sync_count": len(latencies),
            "initial_sync_rooms": len(joined),
            "initial_sync_bytes": round(sum(sizes) / len(sizes)) if sizes else 0,
        })

    # 6. incremental sync with nothing new -------------------------------------------------------

    async def incremental_sync(self, c: Client) -> None:
        """The 100-room user asks, with ``timeout=0``, whether anything is new; nothing is. Each
        request comes from a different device (the cache noted in initial_sync would otherwise
        answer a repeated request)."""
        p = self.p
        devices = [await c.login(self.syncer.user_id) for _ in range(p.incremental_syncs)]
        # The logins are news (device lists): move the token past them first.
        token = self.sync_token
        for _ in range(3):
            r = await c.sync(self.syncer, token)
            if not r.ok:
                raise RequestFailed(f"/sync: {r.status} {r.body[:200]!r}")
            token = (r.json() or {}).get("next_batch", token)
        await asyncio.sleep(0.5)
        latencies: list[float] = []
        not_empty = 0
        with Meter(self.server) as m:
            for dev in devices:
                r = await c.sync(dev, token)
                if r.ok:
                    latencies.append(r.seconds)
                    body = r.json() or {}
                    if body.get("rooms", {}).get("join") or body.get("presence", {}).get("events"):
                        not_empty += 1
        m.requests = len(latencies)
        self.phases["incremental_sync"] = m.report()
        self.results.update({
            "incremental_sync_p50_ms": ms(latencies, 50),
            "incremental_sync_p99_ms": ms(latencies, 99),
            "incremental_sync_count": len(latencies),
            # responses that did carry something (room updates or presence): should be 0
            "incremental_sync_not_empty": not_empty,
        })

    # 7. delivery to 200 long-polling receivers --------------------------------------------------

    async def delivery(self, c: Client) -> None:
        """Every joiner of the join room long-polls /sync (timeout 30 s) in its own loop; the
        room's creator sends messages `delivery_spacing_s` apart. For each (receiver, message):
        the time from just before the send request to the end of the receiver's /sync response
        that carries it."""
        p = self.p
        room = self.join_room
        receivers = [u for u in self.joiners if u.user_id in self.join_members]
        n = len(receivers)
        # A since token for each receiver, cheaply (a filter that leaves out every room).
        no_rooms = json.dumps({"room": {"rooms": []}, "presence": {"types": []},
                               "account_data": {"types": []}}, separators=(",", ":"))
        tokens: list[str | None] = [None] * n
        nxt = iter(range(n))

        async def get_token(_: int) -> None:
            for i in nxt:
                r = await c.sync(receivers[i], None, 0, no_rooms)
                if not r.ok:
                    raise RequestFailed(f"/sync for a token: {r.status} {r.body[:200]!r}")
                tokens[i] = r.json()["next_batch"]
        await run_workers(min(20, n), get_token)

        stop_seq = -1
        seen: list[dict[int, float]] = [{} for _ in range(n)]
        send_at: dict[int, float] = {}
        state = {"last_response": time.perf_counter(), "polling": 0, "responses": 0,
                 "limited": 0, "errors": 0, "finished": 0}

        async def receive(i: int) -> None:
            u, since = receivers[i], tokens[i]
            first = True
            errors = 0
            while errors < 20:
                if first:
                    state["polling"] += 1
                    first = False
                try:
                    r = await c.sync(u, since, 30000)
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    errors += 1
                    state["errors"] += 1
                    c.error_count += 1
                    if len(c.errors) < 10:
                        c.errors.append(f"GET /sync (long-poll) -> {type(e).__name__}: {e}")
                    await asyncio.sleep(0.2)
                    continue
                state["last_response"] = r.ended
                state["responses"] += 1
                if not r.ok:
                    errors += 1
                    state["errors"] += 1
                    await asyncio.sleep(0.2)
                    continue
                # Let the other receivers whose responses are ready stamp theirs before this
                # one spends time decoding.
                await asyncio.sleep(0)
                body = r.json() or {}
                since = body.get("next_batch", since)
                timeline = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
                if timeline.get("limited") and send_at:
                    state["limited"] += 1
                for ev in timeline.get("events", ()):
                    content = ev.get("content")
                    seq = content.get("bench_seq") if isinstance(content, dict) else None
                    if isinstance(seq, int):
                        if seq == stop_seq:
                            state["finished"] += 1
                            return
                        seen[i].setdefault(seq, r.ended)

        tasks = [asyncio.ensure_future(receive(i)) for i in range(n)]
        try:
            # Let the receivers' first polls and the presence they set calm down (bounded).
            t0 = time.perf_counter()
            settle_deadline = t0 + p.delivery_settle_s
            while time.perf_counter() < settle_deadline:
                await asyncio.sleep(0.1)
                if (state["polling"] == n
                        and time.perf_counter() - state["last_response"] > 1.0):
                    break
            self.results["delivery_settle_s"] = round(time.perf_counter() - t0, 2)
            self.results["delivery_settle_responses"] = state["responses"]
            responses_before = state["responses"]
            send_latencies: list[float] = []
            with Meter(self.server) as m:
                start = time.perf_counter()
                for k in range(p.delivery_messages):
                    delay = start + k * p.delivery_spacing_s - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    send_at[k] = time.perf_counter()
                    r = await c.request("PUT", f"/rooms/{q(room)}/send/m.room.message/{c.txn_id()}",
                                        self.owner, {"msgtype": "m.text", "body": f"delivery {k}",
                                                     "bench_seq": k})
                    if r.ok:
                        send_latencies.append(r.seconds)
                # Wait (bounded) until every receiver has every message.
                last_deadline = send_at[p.delivery_messages - 1] + p.delivery_lost_after_s
                while time.perf_counter() < last_deadline:
                    if all(len(s) >= p.delivery_messages for s in seen):
                        break
                    await asyncio.sleep(0.05)
            responses = state["responses"] - responses_before
            # Let the receivers stop cleanly: a last message tells them to.
            await c.request("PUT", f"/rooms/{q(room)}/send/m.room.message/{c.txn_id()}",
                            self.owner, {"msgtype": "m.text", "body": "stop", "bench_seq": stop_seq})
            await asyncio.wait(tasks, timeout=10.0)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        latencies: list[float] = []
        lost = 0
        for s in seen:
            for k, t_sent in send_at.items():
                t_seen = s.get(k)
                if t_seen is None or t_seen - t_sent > p.delivery_lost_after_s:
                    lost += 1
                else:
                    latencies.append(t_seen - t_sent)
        m.requests = responses + len(send_latencies)
        self.phases["delivery"] = m.report()
        self.results.update({
            "delivery_receivers": n,
            "delivery_messages": len(send_at),
            "delivery_p50_ms": ms(latencies, 50), "delivery_p99_ms": ms(latencies, 99),
            "delivery_max_ms": ms(latencies, 100),
            "delivery_lost": lost,
            "delivery_pairs": n * len(send_at),
            "delivery_sync_responses": responses,
            "delivery_limited_timelines": state["limited"],
            "delivery_sync_errors": state["errors"],
            "delivery_receivers_stopped_cleanly": state["finished"],
            # per message: the first and the last receiver to get it (ms after the send began)
            "delivery_per_message_first_last_ms": [
                [ms(v, 0), ms(v, 100)] for v in (
                    [s[k] - t for s in seen if k in s] for k, t in sorted(send_at.items()))],
            "delivery_send_p50_ms": ms(send_latencies, 50),
            "delivery_send_p99_ms": ms(send_latencies, 99),
        })
