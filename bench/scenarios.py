"""The load, identical for every server: setup (not measured), warm-up, then measured phases.

Each measured phase also records how busy the CPUs were: the load client itself, the server
process (all its threads) and the whole machine (which includes PostgreSQL), so a reader can
tell whether the server, the database or the client was the limit.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

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
    phase_seconds: float = 90.0  # a measured phase stops early after this long
    quiet_wait_s: float = 60.0   # how long to wait for other work on the machine to calm down

    @staticmethod
    def quick() -> "Params":
        return Params(sends_per_user=15, room_events=1000, messages_walks=2, rooms_sequential=15,
                      rooms_concurrent=16, joiners=60, phase_seconds=30.0, quiet_wait_s=10.0)


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

    async def run(self) -> dict[str, Any]:
        p = self.p
        async with Client(self.server.base_url) as c:
            t0 = time.perf_counter()
            self.owner = (await register_users(c, "owner", 1))[0]
            self.senders = await register_users(c, "sender", p.senders)
            self.makers = await register_users(c, "maker", p.room_makers)
            self.joiners = await register_users(c, "joiner", p.joiners)
            self.results["setup_register_s"] = round(time.perf_counter() - t0, 2)
            self.log(f"  registered {1 + p.senders + p.room_makers + p.joiners} users "
                     f"in {self.results['setup_register_s']}s")
            for name, fn in (("send", self.send), ("messages", self.messages),
                             ("create", self.create_rooms), ("join", self.joins)):
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
