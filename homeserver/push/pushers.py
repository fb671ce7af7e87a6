"""Pushers: /pushers/set and /pushers, and delivery of notifications to push gateways.

Spec: Client-Server API "Push Notifications" (pushers, POST /pushers/set) and the Push Gateway
API (POST /_matrix/push/v1/notify). Each HTTP pusher sends its user's unread notifications in
order, one request each, resuming after a restart from the last one it handled (stored). A
gateway that fails is retried with exponential backoff (1 s doubling to an hour); a
notification still failing after a day is given up. Pushkeys the gateway reports as rejected
lose their pusher. When a read receipt clears notifications the new badge count is sent alone.
"""

from __future__ import annotations

import enum
import json
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError, invalid_param, missing_param
from homeserver.push.evaluator import tweaks_of
from homeserver.push.processor import ENCRYPTED, PushProcessor
from storage.events import EventStore
from storage.notifications import Notification, NotificationStore
from storage.pushers import Pusher, PusherStore

logger = logging.getLogger(__name__)

NOTIFY_PATH = "/_matrix/push/v1/notify"
EVENT_ID_ONLY = "event_id_only"
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
GIVE_UP_AFTER_MS = 24 * 3600 * 1000
REQUEST_TIMEOUT_S = 30.0
_BATCH = 50


class Outcome(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"    # the gateway refused this request for good (4xx): do not retry it
    REJECTED = "rejected"  # the gateway rejected our pushkey: the pusher goes
    RETRY = "retry"


class GatewayError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Gateway(Protocol):
    async def notify(self, url: str, body: dict[str, Any]) -> list[str]:
        """POST the body; the pushkeys the gateway rejected. Raises GatewayError."""


class HttpGateway:
    """Talks to push gateways over HTTP with treq (no redirects, bounded time)."""

    def __init__(self, reactor: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        import treq.client
        self.reactor = reactor
        self.timeout_s = timeout_s
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 5
        self._client = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def notify(self, url: str, body: dict[str, Any]) -> list[str]:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            resp = await self._client.post(url, data=data, allow_redirects=False,
                                           headers={"Content-Type": ["application/json"]},
                                           timeout=self.timeout_s)
            d = defer.ensureDeferred(self._read(resp))
            d.addTimeout(self.timeout_s, self.reactor)
            code, raw = await d
        except Exception as e:
            raise GatewayError(f"{type(e).__name__}: {e}") from None
        if 200 <= code < 300:
            try:
                answer = json.loads(raw.decode("utf-8"))
            except ValueError:
                return []
            rejected = answer.get("rejected") if isinstance(answer, dict) else None
            return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []
        raise GatewayError(f"HTTP {code}", permanent=400 <= code < 500 and code not in (408, 429))

    @staticmethod
    async def _read(resp: Any) -> tuple[int, bytes]:
        return resp.code, await resp.content()


def check_pusher_url(url: Any) -> str:
    """data.url of an http pusher: an absolute http(s) URL of the gateway's notify endpoint."""
    if not isinstance(url, str):
        raise MatrixError(400, "M_MISSING_PARAM" if url is None else "M_INVALID_PARAM",
                          "'data.url' is required for http pushers and must be a string")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid_param("'data.url' is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_param("'data.url' must be an http or https URL")
    if parts.path != NOTIFY_PATH:
        raise invalid_param(f"'data.url' must have the path {NOTIFY_PATH}")
    return url


def pusher_json(p: Pusher) -> dict[str, Any]:
    out: dict[str, Any] = {"pushkey": p.pushkey, "kind": p.kind, "app_id": p.app_id,
                           "app_display_name": p.app_display_name,
                           "device_display_name": p.device_display_name, "lang": p.lang,
                           "data": p.data}
    if p.profile_tag is not None:
        out["profile_tag"] = p.profile_tag
    return out


class PusherService:
    def __init__(self, store: PusherStore, notifications: NotificationStore, events: EventStore,
                 processor: PushProcessor, clock: Clock, gateway: Gateway) -> None:
        self.store = store
        self.notifications = notifications
        self.events = events
        self.processor = processor
        self.clock = clock
        self.gateway = gateway
        self._workers: dict[tuple[str, str, str], HttpPusher] = {}
        self._by_user: dict[str, set[tuple[str, str, str]]] = {}
        self._stopped = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every stored pusher; each sends what it has not sent yet."""
        for p in await self.store.all():
            self._start(p)

    async def stop(self) -> None:
        self._stopped = True
        for w in list(self._workers.values()):
            w.stop()
        self._workers.clear()
        self._by_user.clear()

    def _start(self, p: Pusher) -> None:
        self._forget(p.key)
        if self._stopped or p.kind != "http":
            return
        worker = HttpPusher(self, p)
        self._workers[p.key] = worker
        self._by_user.setdefault(p.user_id, set()).add(p.key)
        worker.poke()

    def _forget(self, key: tuple[str, str, str]) -> None:
        w = self._workers.pop(key, None)
        if w is not None:
            w.stop()
        keys = self._by_user.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[0]]

    def _user_workers(self, user_id: str) -> list["HttpPusher"]:
        return [self._workers[k] for k in self._by_user.get(user_id, ()) if k in self._workers]

    # --- the API -------------------------------------------------------------------------------

    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [pusher_json(p) for p in await self.store.for_user(user_id)]

    async def set_pusher(self, user_id: str, device_id: str | None, body: dict[str, Any]) -> None:
        """POST /pushers/set: create, update (same app id and pushkey) or, with kind null,
        delete. Everything is checked before anything changes."""
        for key in ("kind", "app_id", "pushkey"):
            if key not in body:
                raise missing_param(key)
        app_id, pushkey, kind = body["app_id"], body["pushkey"], body["kind"]
        if not isinstance(app_id, str) or not app_id:
            raise invalid_param("'app_id' must be a non-empty string")
        if len(app_id) > MAX_APP_ID_CHARS:
            raise invalid_param(f"'app_id' is longer than {MAX_APP_ID_CHARS} characters")
        if not isinstance(pushkey, str) or not pushkey:
            raise invalid_param("'pushkey' must be a non-empty string")
        if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
            raise invalid_param(f"'pushkey' is longer than {MAX_PUSHKEY_BYTES} bytes")
        if kind is None:
            if await self.store.delete(user_id, app_id, pushkey):
                self._forget((user_id, app_id, pushkey))
            return
        if not isinstance(kind, str):
            raise invalid_param("'kind' must be a string or null")
        missing = [k for k in ("app_display_name", "device_display_name", "lang", "data")
                   if body.get(k) is None]
        if missing:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")
        for k in ("app_display_name", "device_display_name", "lang"):
            if not isinstance(body[k], str):
                raise invalid_param(f"'{k}' must be a string")
        profile_tag = body.get("profile_tag")
        if profile_tag is not None and not isinstance(profile_tag, str):
            raise invalid_param("'profile_tag' must be a string")
        data = body["data"]
        if not isinstance(data, dict):
            raise invalid_param("'data' must be an object")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise invalid_param("'append' must be a boolean")
        if kind != "http":
            raise invalid_param(f"Pusher kind {kind!r} is not supported (only 'http')")
        check_pusher_url(data.get("url"))
        if "format" in data and not isinstance(data["format"], str):
            raise invalid_param("'data.format' must be a string")
        now = self.clock.time_msec()
        existing = await self.store.get(user_id, app_id, pushkey)
        p = Pusher(user_id, app_id, pushkey, device_id, kind, body["app_display_name"],
                   body["device_display_name"], profile_tag, body["lang"], data, now,
                   existing.last_stream_ordering if existing else self.events.stream_ids.current(),
                   existing.failing_since if existing else None)
        removed = await self.store.upsert(p, replace_other_users=not append)
        for key in removed:
            self._forget(key)
        self._start(p)

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """SessionService listener: a device's pushers go with it (logout, device deletion)."""
        for key in await self.store.delete_for_devices(user_id, device_ids):
            self._forget(key)

    # --- delivery ------------------------------------------------------------------------------

    def on_notified(self, user_ids: list[str]) -> None:
        """PushProcessor listener: these users were just notified (each pusher sends what it
        finds unread)."""
        for user_id in user_ids:
            for w in self._user_workers(user_id):
                w.poke()

    def on_counts_cleared(self, user_id: str) -> None:
        """NotificationCounts listener: send the lower badge count to the user's gateways."""
        workers = self._user_workers(user_id)
        if workers:
            defer.ensureDeferred(self._send_badges(user_id, workers)).addErrback(
                lambda f: logger.warning("badge update for %s failed: %s", user_id, f.value))

    async def _send_badges(self, user_id: str, workers: list["HttpPusher"]) -> None:
        unread = await self.notifications.unread_total(user_id, await self.badge_rooms(user_id))
        for w in workers:
            if w.backing_off:
                continue  # its gateway is failing; the next notification carries the count
            # The count goes even when 0: that is what clears a badge on the device.
            body = {"notification": {"counts": {"unread": unread},
                                     "devices": [self.device(w.pusher, {})]}}
            await self._post(w.pusher, body)

    async def badge_rooms(self, user_id: str) -> list[str]:
        """The rooms whose unread notifications count in the user's badge: those joined and
        those invited to (leaving a room marks its notifications read)."""
        return await self.events.get_rooms_for_user(user_id, ("join", "invite"))

    def device(self, p: Pusher, tweaks: dict[str, Any]) -> dict[str, Any]:
        return {"app_id": p.app_id, "pushkey": p.pushkey, "pushkey_ts": p.pushkey_ts // 1000,
                "data": {k: v for k, v in p.data.items() if k != "url"}, "tweaks": tweaks}

    async def notification_body(self, p: Pusher, n: Notification,
                                badge_rooms: list[str] | None = None) -> dict[str, Any] | None:
        """The /notify body for one notification, or None if its event is gone.
        ``badge_rooms``: the user's ``badge_rooms``, when the caller has them already."""
        row = await self.events.get_event_row(n.event_id)
        if row is None:
            return None
        ev = row.event
        tweaks = tweaks_of(n.actions)
        # The badge as of this notification: evaluation writes a burst of events at once, so
        # later ones may be stored already; their own pushes carry the higher counts.
        if badge_rooms is None:
            badge_rooms = await self.badge_rooms(p.user_id)
        unread = await self.notifications.unread_total(p.user_id, badge_rooms,
                                                       upto=n.stream_ordering)
        # Low priority unless the notification makes a sound, highlights, or (encrypted) might.
        high = ev.type == ENCRYPTED or bool(tweaks.get("sound")) or tweaks.get("highlight") is True
        notification: dict[str, Any] = {
            "event_id": ev.event_id, "room_id": ev.room_id, "prio": "high" if high else "low",
            "counts": {"unread": unread} if unread else {},
            "devices": [self.device(p, tweaks)]}
        if p.data.get("format") != EVENT_ID_ONLY:
            notification.update({"type": ev.type, "sender": ev.sender})
            if ev.content:
                notification["content"] = dict(ev.content)
            if ev.type == "m.room.member":
                notification["user_is_target"] = ev.state_key == p.user_id
            group = row.state_group_after if row.state_group_after is not None else row.state_group_before
            if group is not None:
                facts = await self.processor.facts_at(group)
                sender_name = facts.joined.get(ev.sender)
                if sender_name:
                    notification["sender_display_name"] = sender_name
                if facts.name:
                    notification["room_name"] = facts.name
                if facts.alias:
                    notification["room_alias"] = facts.alias
        return {"notification": notification}

    async def send(self, p: Pusher, n: Notification,
                   badge_rooms: list[str] | None = None) -> Outcome:
        body = await self.notification_body(p, n, badge_rooms)
        if body is None:
            return Outcome.DROPPED
        return await self._post(p, body)

    async def _post(self, p: Pusher, body: dict[str, Any]) -> Outcome:
        url = p.data.get("url")
        try:
            rejected = await self.gateway.notify(url, body)  # type: ignore[arg-type]
        except GatewayError as e:
            logger.info("push to %s for %s failed: %s", url, p.user_id, e)
            return Outcome.DROPPED if e.permanent else Outcome.RETRY
        if p.pushkey in rejected:
            logger.info("gateway %s rejected pushkey of %s; removing the pusher", url, p.user_id)
            await self.store.delete(p.user_id, p.app_id, p.pushkey)
            self._forget(p.key)
            return Outcome.REJECTED
        return Outcome.SENT


class HttpPusher:
    """Sends one pusher's notifications in order, with backoff while its gateway fails."""

    def __init__(self, service: PusherService, pusher: Pusher) -> None:
        self.service = service
        self.pusher = pusher
        self.last = pusher.last_stream_ordering
        self.failing_since = pusher.failing_since
        self.backoff_s = INITIAL_BACKOFF_S
        self._running = False
        self._poked = False
        self._timer: Any = None
        self._stopped = False

    @property
    def backing_off(self) -> bool:
        return self._timer is not None

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def poke(self) -> None:
        if self._stopped or self._timer is not None:
            return  # stopped, or waiting out a backoff (the timer runs it)
        if self._running:
            self._poked = True
            return
        self._running = True
        d = defer.ensureDeferred(self._run())
        d.addErrback(lambda f: logger.error("pusher %s/%s failed: %s", self.pusher.user_id,
                                            self.pusher.app_id, f.getTraceback()))

        def done(_: Any) -> None:
            self._running = False
            if self._poked and not self._stopped and self._timer is None:
                self._poked = False
                self.poke()
        d.addBoth(done)

    def _wake(self) -> None:
        self._timer = None
        self.poke()

    async def _run(self) -> None:
        svc = self.service
        while not self._stopped:
            self._poked = False
            user_id = self.pusher.user_id
            # The rooms are looked up once per batch (not once per notification sent).
            rooms = await svc.badge_rooms(user_id)
            batch = await svc.notifications.unread_after(user_id, rooms, self.last, _BATCH)
            if not batch:
                return
            for n in batch:
                if self._stopped:
                    return
                outcome = await svc.send(self.pusher, n, rooms)
                if outcome is Outcome.REJECTED:
                    self._stopped = True
                    return
                if outcome is Outcome.RETRY:
                    now = svc.clock.time_msec()
                    if self.failing_since is None:
                        self.failing_since = now
                    if now - self.failing_since < GIVE_UP_AFTER_MS:
                        await self._save()
                        self._timer = svc.clock.call_later(self.backoff_s, self._wake)
                        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
                        return
                    logger.warning("giving up on pushing %s to %s after a day of failures",
                                   n.event_id, self.pusher.data.get("url"))
                self.last = n.stream_ordering
                self.failing_since = None
                self.backoff_s = INITIAL_BACKOFF_S
                await self._save()

    async def _save(self) -> None:
        p = self.pusher
        await self.service.store.set_progress(p.user_id, p.app_id, p.pushkey, self.last,
                                              self.failing_since)
