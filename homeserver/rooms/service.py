"""Room operations a client asks for: create, send, state, membership, redaction."""

from __future__ import annotations

import logging
import secrets
from typing import Any, Mapping

from crypto.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.http.errors import MatrixError
from homeserver.identifiers import is_valid_user_id
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.events import Event
from homeserver.rooms.power_levels import get_named_level, get_power_level
from homeserver.rooms.stripped import StrippedState
from storage.directory import DirectoryStore
from storage.events import EventStore, PersistedEvent
from storage.profiles import ProfileStore

logger = logging.getLogger(__name__)

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")


def default_power_levels(creator: str, preset: str, privileged_creators: bool,
                         invitees: list[str]) -> dict[str, Any]:
    users: dict[str, int] = {} if privileged_creators else {creator: 100}
    if preset == "trusted_private_chat":
        for u in invitees:
            users[u] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100, "m.room.topic": 50,
            "m.room.pinned_events": 50,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "historical": 100,
        "notifications": {"room": 50},
    }


class RoomService:
    def __init__(self, store: EventStore, creator: EventCreator, profiles: ProfileStore,
                 directory: DirectoryStore, server_name: str) -> None:
        self.store = store
        self.directory = directory
        self.creator = creator
        self.profiles = profiles
        self.server_name = server_name
        # federation/membership.RemoteMembership, when federation is on: joins, knocks and
        # invite rejections through other servers, and invites of their users.
        self.remote: Any = None

    async def room_version(self, room_id: str) -> str:
        rv = await self.store.get_room_version(room_id)
        if rv is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return rv

    async def send(self, room_id: str, sender: str, event_type: str, content: Mapping[str, Any],
                   state_key: str | None = None, txn_key: str | None = None,
                   redacts: str | None = None) -> PersistedEvent:
        rv = await self.room_version(room_id)
        await self._check_thread_root(content)
        return await self.creator.create(room_id=room_id, room_version=rv, event_type=event_type,
                                         sender=sender, content=content, state_key=state_key,
                                         txn_key=txn_key, redacts=redacts)

    async def _check_thread_root(self, content: Mapping[str, Any]) -> None:
        """Spec (threading): a thread cannot start from an event that itself has a relation."""
        rel = content.get("m.relates_to")
        if not isinstance(rel, Mapping) or rel.get("rel_type") != "m.thread":
            return
        root_id = rel.get("event_id")
        root = (await self.store.get_events([root_id])).get(root_id) if isinstance(root_id, str) else None
        if root is not None and isinstance(root.content.get("m.relates_to"), Mapping) \
                and root.content["m.relates_to"].get("rel_type") is not None:
            raise MatrixError(400, "M_UNKNOWN", "Cannot start a thread from an event with a relation")

    async def create_room(self, creator: str, *, room_version: str | None, preset: str | None,
                          visibility: str, creation_content: Mapping[str, Any],
                          initial_state: list[tuple[str, str, dict]], name: str | None,
                          topic: str | None, invite: list[str], is_direct: bool,
                          power_level_override: Mapping[str, Any] | None,
                          alias_localpart: str | None) -> str:
        """Send the spec's sequence of events for a new room; returns its room id."""
        version = room_version or DEFAULT_ROOM_VERSION
        if version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {version!r} is not supported by this server")
        rv = get_room_version(version)
        alias = f"#{alias_localpart}:{self.server_name}" if alias_localpart is not None else None
        if alias is not None and await self.directory.get_alias(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already in use")
        preset = preset or ("public_chat" if visibility == "public" else "private_chat")
        create_content = dict(creation_content)
        create_content["room_version"] = version
        if not rv.implicit_room_creator:
            create_content["creator"] = creator
        else:
            create_content.pop("creator", None)
        if rv.privileged_room_creators and preset == "trusted_private_chat":
            extra = list(create_content.get("additional_creators") or [])
            for u in invite:
                if u not in extra:
                    extra.append(u)
            if extra:
                create_content["additional_creators"] = extra
        room_id: str | None = None
        if not rv.room_id_is_create_event_hash:
            room_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        created = await self.creator.create(room_id=room_id, room_version=version,
                                            event_type="m.room.create", sender=creator,
                                            content=create_content, state_key="",
                                            new_room_creator=creator)
        room_id = created.event.room_id

        async def state(etype: str, content: Mapping[str, Any], key: str = "") -> None:
            await self.creator.create(room_id=room_id, room_version=version, event_type=etype,
                                      sender=creator, content=content, state_key=key)

        profile = await self.profiles.get_profile(creator)
        member: dict[str, Any] = {"membership": "join"}
        for k in ("displayname", "avatar_url"):
            if isinstance(profile.get(k), str):
                member[k] = profile[k]
        await state("m.room.member", member, creator)

        privileged = rv.privileged_room_creators
        pl = default_power_levels(creator, preset, privileged,
                                  [] if privileged else invite)
        for k, v in (power_level_override or {}).items():
            pl[k] = v
        await state("m.room.power_levels", pl)
        if alias is not None:
            if not await self.directory.create_alias(alias, room_id, creator,
                                                     self.creator.clock.time_msec()):
                raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already in use")
            await state("m.room.canonical_alias", {"alias": alias})
        initial_keys = {(t, k) for t, k, _ in initial_state}
        join_rule = "public" if preset == "public_chat" else "invite"
        if ("m.room.join_rules", "") not in initial_keys:
            await state("m.room.join_rules", {"join_rule": join_rule})
        if ("m.room.history_visibility", "") not in initial_keys:
            await state("m.room.history_visibility", {"history_visibility": "shared"})
        if ("m.room.guest_access", "") not in initial_keys:
            await state("m.room.guest_access",
                        {"guest_access": "forbidden" if preset == "public_chat" else "can_join"})
        for etype, key, content in initial_state:
            await state(etype, content, key)
        if name is not None:
            await state("m.room.name", {"name": name})
        if topic is not None:
            await state("m.room.topic", {"topic": topic,
                                         "m.topic": [{"body": topic, "mimetype": "text/plain"}]})
        for user_id in invite:
            content: dict[str, Any] = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            if self.remote is not None and self._domain(user_id) != self.server_name:
                try:
                    await self.update_membership(room_id, creator, user_id, "invite",
                                                 extra={"is_direct": True} if is_direct else None)
                except MatrixError as e:
                    logger.info("invite of %s to the new room %s failed: %s", user_id, room_id,
                                e.message)
                continue
            await state("m.room.member", content, user_id)
        if visibility == "public":
            await self.directory.set_public(room_id, True)
        return room_id

    async def current_state_events(self, room_id: str, keys: list[tuple[str, str]]) -> dict:
        """(type, state_key) -> Event for those keys present in the room's current state."""
        state = await self.store.get_current_state_ids(room_id)
        ids = {k: state[k] for k in keys if k in state}
        events = await self.store.get_events(ids.values())
        return {k: events[i] for k, i in ids.items() if i in events}

    async def world_readable(self, room_id: str) -> bool:
        key = ("m.room.history_visibility", "")
        ev = (await self.current_state_events(room_id, [key])).get(key)
        return ev is not None and ev.content.get("history_visibility") == "world_readable"

    async def directory_entry(self, room_id: str) -> dict[str, Any]:
        """The public room directory's summary of a room (spec PublishedRoomsChunk)."""
        keys = [("m.room.name", ""), ("m.room.topic", ""), ("m.room.avatar", ""),
                ("m.room.canonical_alias", ""), ("m.room.join_rules", ""),
                ("m.room.guest_access", ""), ("m.room.history_visibility", ""), ("m.room.create", "")]
        ev = await self.current_state_events(room_id, keys)

        def field(key: str, name: str) -> Any:
            e = ev.get((key, ""))
            value = e.content.get(name) if e is not None else None
            return value if isinstance(value, str) else None

        entry: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": len(await self.store.get_members(room_id)),
            "world_readable": field("m.room.history_visibility", "history_visibility") == "world_readable",
            "guest_can_join": field("m.room.guest_access", "guest_access") == "can_join",
        }
        for key, name, out in (("m.room.name", "name", "name"), ("m.room.topic", "topic", "topic"),
                               ("m.room.avatar", "url", "avatar_url"),
                               ("m.room.canonical_alias", "alias", "canonical_alias"),
                               ("m.room.join_rules", "join_rule", "join_rule"),
                               ("m.room.create", "type", "room_type")):
            value = field(key, name)
            if value is not None:
                entry[out] = value
        return entry

    async def power_of(self, room_id: str, user_id: str) -> tuple[int | float, Event | None]:
        """A user's current power level in a room, and the power levels event it came from."""
        state = await self.store.get_current_state_ids(room_id)
        ids = [i for i in (state.get(("m.room.power_levels", "")), state.get(("m.room.create", ""))) if i]
        events = await self.store.get_events(ids)
        pl = events.get(state.get(("m.room.power_levels", ""), ""))
        create = events.get(state.get(("m.room.create", ""), ""))
        return get_power_level(user_id, pl, create), pl

    async def redact(self, room_id: str, sender: str, target: Event, reason: str | None,
                     txn_key: str | None) -> PersistedEvent:
        """Redact ``target``: one's own events, or others' with the room's redact power level."""
        if target.sender != sender:
            level, pl = await self.power_of(room_id, sender)
            if level < get_named_level("redact", pl):
                raise MatrixError(403, "M_FORBIDDEN", "You may not redact other users' events")
        content: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        return await self.send(room_id, sender, "m.room.redaction", content, txn_key=txn_key,
                               redacts=target.event_id)

    async def _restricted_join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """For a restricted room the user may join through an allowed room: a local member
        who may invite, to name in join_authorised_via_users_server (spec: restricted rooms).

        None when the join needs no authoriser (not restricted, or already invited/joined).
        Raises 403 when the room is restricted and none of its allowed rooms has the user."""
        key = ("m.room.join_rules", "")
        rules = (await self.current_state_events(room_id, [key])).get(key)
        rule = rules.content.get("join_rule") if rules is not None else None
        if rule not in ("restricted", "knock_restricted"):
            return None
        current = await self.store.get_membership(room_id, user_id)
        if current is not None and current[0] in ("join", "invite"):
            return None
        allow = rules.content.get("allow") if rules is not None else None
        allowed_rooms = [a.get("room_id") for a in allow if isinstance(a, Mapping)
                         and a.get("type") == "m.room_membership"
                         and isinstance(a.get("room_id"), str)] if isinstance(allow, list) else []
        for allowed in allowed_rooms:
            m = await self.store.get_membership(allowed, user_id)
            if m is not None and m[0] == "join":
                break
        else:
            if rule == "knock_restricted":
                return None  # joining is refused by the rules; knocking stays possible
            raise MatrixError(403, "M_FORBIDDEN", "You are not in any room this room admits")
        key_pl = ("m.room.power_levels", "")
        state = await self.current_state_events(room_id, [key_pl, ("m.room.create", "")])
        invite_level = get_named_level("invite", state.get(key_pl))
        for member in await self.store.get_members(room_id, ("join",)):
            if member.endswith(":" + self.server_name) and get_power_level(
                    member, state.get(key_pl), state.get(("m.room.create", ""))) >= invite_level:
                return member
        raise MatrixError(403, "M_FORBIDDEN", "No member of this server can admit you to the room")

    async def profile_changed(self, user_id: str, field: str, value: Any) -> None:
        """Spec "Events on change of profile information": a new join event with the new
        display name or avatar in every room the user is joined to."""
        for room_id in await self.store.get_rooms_for_user(user_id):
            key = ("m.room.member", user_id)
            member = (await self.current_state_events(room_id, [key])).get(key)
            if member is None or member.membership != "join":
                continue
            content = dict(member.content)
            if content.get(field) == value:
                continue
            if value is None:
                content.pop(field, None)
            else:
                content[field] = value
            try:
                await self.send(room_id, user_id, "m.room.member", content, state_key=user_id)
            except MatrixError as e:
                logger.info("profile change not sent to %s: %s", room_id, e.message)

    def _domain(self, user_id: str) -> str:
        return user_id.split(":", 1)[1] if ":" in user_id else ""

    async def _needs_remote(self, room_id: str) -> bool:
        """Whether this server must go through another one: it is not in the room (no
        timeline here, or no local user joined any more)."""
        if self.remote is None:
            return False
        if not await self.store.get_forward_extremities(room_id):
            return True
        joined = await self.store.get_members(room_id, ("join",))
        return not any(self._domain(u) == self.server_name for u in joined)

    async def _candidate_servers(self, room_id: str, user_id: str, servers: list[str]) -> list[str]:
        out = list(servers)
        current = await self.store.get_membership(room_id, user_id)
        if current is not None and current[0] in ("invite", "knock"):
            ev = (await self.store.get_events([current[1]])).get(current[1])
            if ev is not None:
                out.append(self._domain(ev.sender))
        for member in await self.store.get_members(room_id, ("join",)):
            out.append(self._domain(member))
        if ":" in room_id:  # room ids before v12 name the server that created them
            out.append(room_id.split(":", 1)[1])
        return [s for s in dict.fromkeys(out) if s and s != self.server_name]

    async def update_membership(self, room_id: str, sender: str, target: str, membership: str,
                                reason: str | None = None, extra: Mapping[str, Any] | None = None,
                                txn_key: str | None = None, servers: list[str] | None = None
                                ) -> PersistedEvent | None:
        """join/invite/leave/ban/knock as the authorization rules allow; kick is leave of another.

        ``servers`` are where to try a join or knock of a room this server is not in.
        Returns None for a leave or knock sent through another server."""
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id: {target!r}")
        content: dict[str, Any] = dict(extra or {})
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        if target == sender and membership in ("join", "knock", "leave") \
                and await self._needs_remote(room_id):
            candidates = await self._candidate_servers(room_id, sender, servers or [])
            if membership == "join" and candidates:
                profile = await self.profiles.get_profile(sender)
                for k in ("displayname", "avatar_url"):
                    if isinstance(profile.get(k), str) and k not in content:
                        content[k] = profile[k]
                content.pop("membership")
                return await self.remote.join(room_id, sender, candidates, content)
            if membership in ("knock", "leave") and candidates and \
                    not await self.store.get_forward_extremities(room_id):
                content.pop("membership")
                await self.remote.leave_or_knock(room_id, sender, candidates, membership, content)
                return None
            if await self.store.get_room_version(room_id) is None or \
                    not await self.store.get_forward_extremities(room_id):
                raise MatrixError(404, "M_NOT_FOUND", "No server to reach this room through; "
                                  "give one with server_name/via")
        if membership == "join" and target == sender:
            profile = await self.profiles.get_profile(sender)
            for k in ("displayname", "avatar_url"):
                if isinstance(profile.get(k), str) and k not in content:
                    content[k] = profile[k]
            via = await self._restricted_join_authoriser(room_id, sender)
            if via is not None:
                content["join_authorised_via_users_server"] = via
        elif membership == "invite":
            current = await self.store.get_membership(room_id, target)
            if current and current[0] == "join":
                raise MatrixError(403, "M_FORBIDDEN", f"{target} is already in the room")
            if self.remote is not None and self._domain(target) != self.server_name:
                stripped = await StrippedState(self.store).of_room(room_id)
                rv = await self.room_version(room_id)

                async def countersign(event: Any) -> Any:
                    return await self.remote.invite_remote(event, stripped)
                return await self.creator.create(
                    room_id=room_id, room_version=rv, event_type="m.room.member", sender=sender,
                    content=content, state_key=target, txn_key=txn_key, exchange=countersign)
        return await self.send(room_id, sender, "m.room.member", content, state_key=target,
                               txn_key=txn_key)
