"""The spec's server-default push rules, a user's effective ruleset, and checks of rule bodies.

Spec: Client-Server API "Push Rules" and "Predefined Rules" (v1.17 and later: the legacy rules
that searched ``content.body`` for the user's name are gone). Server-default rules are less
important than the user's own rules of the same kind, except ``.m.rule.master``, which always
comes first.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.errors import MatrixError, invalid_param, missing_param
from homeserver.push.evaluator import (KNOWN_ACTIONS, USER, CompiledRule, Ruleset, clean_actions,
                                       compile_rule)
from storage.push_rules import UserRules

KINDS = ("override", "content", "room", "sender", "underride")
MASTER = ".m.rule.master"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: Any) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any],
          enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions,
            "actions": actions}


def default_rules(user_id: Any) -> dict[str, list[dict[str, Any]]]:
    """The predefined rules for ``user_id`` (or for the USER placeholder, as a template), in the
    spec's order and with its exact conditions and actions."""
    override = [
        _rule(MASTER, [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(".m.rule.invite_for_me", [
            _match("type", "m.room.member"), _match("content.membership", "invite"),
            _match("state_key", user_id)], ["notify", dict(_SOUND_DEFAULT)]),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(".m.rule.is_user_mention", [
            {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
             "value": user_id}], ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)]),
        _rule(".m.rule.is_room_mention", [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"}],
            ["notify", dict(_HIGHLIGHT)]),
        _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")],
              ["notify", dict(_HIGHLIGHT)]),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"),
                                          _match("state_key", "")], []),
        _rule(".m.rule.suppress_edits", [
            {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
             "value": "m.replace"}], []),
    ]
    underride = [
        _rule(".m.rule.call", [_match("type", "m.call.invite")],
              ["notify", {"set_tweak": "sound", "value": "ring"}]),
        _rule(".m.rule.encrypted_room_one_to_one", [
            {"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
            ["notify", dict(_SOUND_DEFAULT)]),
        _rule(".m.rule.room_one_to_one", [
            {"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
            ["notify", dict(_SOUND_DEFAULT)]),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]
    return {"override": override, "content": [], "room": [], "sender": [], "underride": underride}


_DEFAULT_IDS = {kind: {r["rule_id"] for r in rules}
                for kind, rules in default_rules("@template:invalid").items()}


def is_default_rule(kind: str, rule_id: str) -> bool:
    return rule_id in _DEFAULT_IDS.get(kind, ())


def effective_rules(user_id: Any, stored: UserRules) -> dict[str, list[dict[str, Any]]]:
    """The user's whole ruleset in priority order, as the API and m.push_rules show it."""
    defaults = default_rules(user_id)
    for kind, rules in defaults.items():
        for r in rules:
            change = stored.defaults.get((kind, r["rule_id"]))
            if change is not None:
                if change.enabled is not None:
                    r["enabled"] = change.enabled
                if change.actions is not None:
                    r["actions"] = list(change.actions)
    own: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for s in stored.rules:
        if s.kind not in own:
            continue
        rule: dict[str, Any] = {"rule_id": s.rule_id, "default": False, "enabled": s.enabled}
        if s.kind in ("override", "underride"):
            rule["conditions"] = list(s.conditions or [])
        elif s.kind == "content":
            rule["pattern"] = s.pattern or ""
        rule["actions"] = list(s.actions)
        own[s.kind].append(rule)
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        ds = defaults[kind]
        if kind == "override":
            master = [r for r in ds if r["rule_id"] == MASTER]
            out[kind] = master + own[kind] + [r for r in ds if r["rule_id"] != MASTER]
        else:
            out[kind] = own[kind] + ds
    return out


def compile_ruleset(rules: dict[str, list[dict[str, Any]]]) -> Ruleset:
    """The enabled rules, in evaluation order, with room/sender/content rules' implied
    conditions made explicit."""
    compiled: list[CompiledRule] = []
    for kind in KINDS:
        for r in rules.get(kind, []):
            if not r.get("enabled", True):
                continue
            if kind == "room":
                conds: list[Any] = [{"kind": "event_property_is", "key": "room_id",
                                     "value": r["rule_id"]}]
            elif kind == "sender":
                conds = [{"kind": "event_property_is", "key": "sender", "value": r["rule_id"]}]
            elif kind == "content":
                conds = [{"kind": "event_match", "key": "content.body", "pattern": r.get("pattern")}]
            else:
                conds = list(r.get("conditions") or [])
            compiled.append(compile_rule(kind, r["rule_id"], conds, r.get("actions", [])))
    return Ruleset(compiled)


# Shared by every user who changed nothing: the defaults with USER standing for the owner.
DEFAULT_RULESET = compile_ruleset(default_rules(USER))


def user_ruleset(stored: UserRules) -> Ruleset:
    return DEFAULT_RULESET if stored.empty else compile_ruleset(effective_rules(USER, stored))


def format_rule(kind: str, rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as the API returns it (no conditions on room/sender/content rules)."""
    out = {k: v for k, v in rule.items() if k in ("rule_id", "default", "enabled", "actions")}
    if kind in ("override", "underride"):
        out["conditions"] = rule.get("conditions", [])
    elif kind == "content":
        out["pattern"] = rule.get("pattern", "")
    return out


# --- checks of what clients send ---------------------------------------------------------------

def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise invalid_param(f"Unknown push rule kind {kind!r}; expected one of {', '.join(KINDS)}")


def check_new_rule_id(rule_id: str) -> None:
    """Spec: ids starting with '.' are reserved for server-default rules; no '/' or '\\'."""
    if not rule_id:
        raise invalid_param("rule_id must not be empty")
    if rule_id.startswith("."):
        raise invalid_param("rule_ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("rule_id must not contain '/' or '\\'")


def check_actions(actions: Any) -> list[Any]:
    """A rule's actions, checked; the historical dont_notify/coalesce are dropped."""
    if not isinstance(actions, list):
        raise invalid_param("'actions' must be an array")
    for a in actions:
        if isinstance(a, str):
            if a not in KNOWN_ACTIONS:
                raise invalid_param(f"Unknown action {a!r}")
        elif isinstance(a, dict):
            if not isinstance(a.get("set_tweak"), str):
                raise invalid_param("An object action must have a string 'set_tweak'")
        else:
            raise invalid_param("Each action must be a string or an object")
    return clean_actions(actions)


_REQUIRED_PARAMS = {
    "event_match": ("key", "pattern"),
    "event_property_is": ("key", "value"),
    "event_property_contains": ("key", "value"),
    "room_member_count": ("is",),
    "sender_notification_permission": ("key",),
}


def check_conditions(conditions: Any) -> list[Any]:
    """Conditions of an override/underride rule. Kinds the server does not know are kept (they
    never match, as the spec says); known kinds must carry their parameters."""
    if not isinstance(conditions, list):
        raise invalid_param("'conditions' must be an array")
    for c in conditions:
        if not isinstance(c, dict) or not isinstance(c.get("kind"), str):
            raise invalid_param("Each condition must be an object with a string 'kind'")
        for param in _REQUIRED_PARAMS.get(c["kind"], ()):
            if param not in c:
                raise invalid_param(f"{c['kind']} condition needs '{param}'")
        for param in ("key", "pattern", "is"):
            if param in c and not isinstance(c[param], str):
                raise invalid_param(f"Condition '{param}' must be a string")
        if "value" in c and not (c["value"] is None or isinstance(c["value"], (str, bool, int))):
            raise invalid_param("Condition 'value' must be a string, integer, boolean or null")
    return conditions


def rule_not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "The push rule was not found.")


def check_pattern(pattern: Any) -> str:
    if pattern is None:
        raise missing_param("pattern")
    if not isinstance(pattern, str):
        raise invalid_param("'pattern' must be a string")
    return pattern
