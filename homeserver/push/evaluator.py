"""Push rule evaluation: every condition kind of the spec, and a ruleset evaluated for many users
at once.

Spec: Client-Server API "Push Rules" ("Conditions", "Actions"), appendices "Glob-style matching"
and "Dot-separated property paths". Pure code: no I/O, so the caller gathers what the
conditions need (member count, power levels, display names) once per event.

Cost: users whose rules are the same template (the server defaults, where only "the user's
Matrix ID" differs) are evaluated together. A condition that does not depend on the user is
computed once per event and remembered; the few that do (``state_key`` is the user, the user is
in ``m.mentions``, the display name is in the body) narrow a set of users with set operations.
So an event costs about rules + members, not rules x members.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping
from homeserver.field_paths import parse_path

MISSING: Any = object()  # a property that is absent (as opposed to null)


class _User:
    """Stands for the owner of the rules in a rule template (the spec's "[the user's Matrix ID]")."""

    def __repr__(self) -> str:
        return "USER"


USER: Any = _User()

HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
KNOWN_ACTIONS = frozenset({"notify"}) | HISTORICAL_ACTIONS

# canonical JSON integers: [-(2**53)+1, (2**53)-1]
_MAX_INT = 2 ** 53 - 1
_WORD_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")
BODY_PATH = ("content", "body")
_RELATES_TO = "m.relates_to"


# --- paths and globs ---------------------------------------------------------------------------



class _Segment:
    """A piece of a glob between two ``*``: literal text where ``?`` matches any one character."""

    def __init__(self, text: str) -> None:
        self.n = len(text)
        self.text = text
        self._re = None
        if "?" in text:
            self._re = re.compile(".".join(re.escape(p) for p in text.split("?")), re.DOTALL)

    def at(self, value: str, i: int) -> bool:
        if i + self.n > len(value):
            return False
        if self._re is None:
            return value.startswith(self.text, i)
        return self._re.match(value, i) is not None

    def find(self, value: str, start: int, end: int) -> int:
        """The first index >= start where the segment matches wholly before ``end``, or -1."""
        if start > end:
            return -1
        if self._re is None:
            return value.find(self.text, start, end)
        m = self._re.search(value, start, end)
        return m.start() if m else -1


class Glob:
    """A glob (``*`` any run, ``?`` one character), matched case-insensitively.

    Matching is greedy segment by segment, never backtracking, so a hostile pattern such as
    ``*a*a*a*a*b`` costs O(len(value) * len(pattern)) instead of the exponential time a regex
    translation could take.
    """

    def __init__(self, pattern: str) -> None:
        self.segments = [_Segment(s) for s in pattern.lower().split("*")]

    def fullmatch(self, value: str) -> bool:
        """``value`` (already lower-cased) as a whole matches."""
        segs = self.segments
        if len(segs) == 1:
            return len(value) == segs[0].n and segs[0].at(value, 0)
        first, last = segs[0], segs[-1]
        if not first.at(value, 0):
            return False
        pos, end = first.n, len(value) - last.n
        if end < pos:
            return False
        for seg in segs[1:-1]:
            if seg.n:
                i = seg.find(value, pos, end)
                if i < 0:
                    return False
                pos = i + seg.n
        return last.at(value, end)

    def search_words(self, value: str) -> bool:
        """Some substring of ``value`` (lower-cased) that starts and ends at a word boundary
        matches: the special case for ``content.body``."""
        segs, n = self.segments, len(value)
        if len(segs) == 1:
            return _find_bounded(value, segs[0], 0)
        first = segs[0]
        i = first.find(value, 0, n)
        while i >= 0 and not _boundary_before(value, i):
            i = first.find(value, i + 1, n)
        if i < 0:
            return False
        pos = i + first.n
        for seg in segs[1:-1]:
            if seg.n:
                j = seg.find(value, pos, n)
                if j < 0:
                    return False
                pos = j + seg.n
        last = segs[-1]
        j = last.find(value, pos, n)
        while j >= 0:
            if _boundary_after(value, j + last.n):
                return True
            j = last.find(value, j + 1, n)
        return False


def _boundary_before(value: str, i: int) -> bool:
    return i == 0 or value[i - 1] not in _WORD_CHARS


def _boundary_after(value: str, j: int) -> bool:
    return j == len(value) or value[j] not in _WORD_CHARS


def _find_bounded(value: str, seg: _Segment, start: int) -> bool:
    n = len(value)
    i = seg.find(value, start, n)
    while i >= 0:
        if _boundary_before(value, i) and _boundary_after(value, i + seg.n):
            return True
        i = seg.find(value, i + 1, n)
    return False


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Glob:
    return Glob(pattern)


def glob_matches(pattern: str, value: str, *, words: bool = False) -> bool:
    """The spec's event_match test of one value (case-insensitive; ``words``: the content.body
    rule of matching a word-bounded substring)."""
    g = compile_glob(pattern)
    low = value.lower()
    return g.search_words(low) if words else g.fullmatch(low)


def contains_words(text: str, needle: str) -> bool:
    """``needle`` (taken literally, not as a glob) occurs in ``text`` between word boundaries;
    both already lower-cased."""
    if not needle:
        return False
    n = len(text)
    i = text.find(needle, 0, n)
    while i >= 0:
        if _boundary_before(text, i) and _boundary_after(text, i + len(needle)):
            return True
        i = text.find(needle, i + 1, n)
    return False


def _scalar(value: Any) -> bool:
    """A non-compound canonical JSON value: string, integer in range, boolean or null."""
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_INT <= value <= _MAX_INT


def same_value(a: Any, b: Any) -> bool:
    """Exact equality of scalars without casting (``true`` is not ``1``, ``"1"`` is not ``1``)."""
    return a is not MISSING and _scalar(a) and type(a) is type(b) and a == b


# --- the event as the conditions see it --------------------------------------------------------

class EventView:
    """One event and what the conditions need about its room, shared by all the users it is
    evaluated for; user-independent condition results are remembered here."""

    def __init__(self, event: Mapping[str, Any], *, member_count: int = 0,
                 sender_power: float = 0, notification_level: Callable[[str], int] = lambda k: 50,
                 display_names: Mapping[str, str] | None = None, opaque_content: bool = False
                 ) -> None:
        self.event = event
        self.member_count = member_count
        self.sender_power = sender_power
        self.notification_level = notification_level
        self.display_names = display_names or {}
        # Encrypted events: the server cannot read the content, so only the parts the spec keeps
        # in the clear (m.relates_to) are matched; anything else in it may be forged plaintext.
        self.opaque_content = opaque_content
        self._memo: dict[Any, bool] = {}
        self._lower: dict[str, str] = {}

    def lookup(self, path: tuple[str, ...]) -> Any:
        if self.opaque_content and path[0] == "content" and (len(path) < 2 or path[1] != _RELATES_TO):
            return MISSING
        value: Any = self.event
        for part in path:
            if type(value) is not dict and not isinstance(value, Mapping):
                return MISSING
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        return value

    def lower(self, text: str) -> str:
        low = self._lower.get(text)
        if low is None:
            low = self._lower[text] = text.lower()
        return low

    def holds(self, cond: "Condition") -> bool:
        result = self._memo.get(cond)
        if result is None:
            result = self._memo[cond] = cond.holds(self)
        return result


# --- conditions --------------------------------------------------------------------------------

class Condition:
    """A compiled condition. ``user_dependent`` ones are evaluated through ``matching_users``."""
    user_dependent = False

    def holds(self, view: EventView) -> bool:
        raise NotImplementedError

    def matching_users(self, view: EventView, users: set[str]) -> set[str]:
        return set(users) if self.holds(view) else set()


@dataclass(frozen=True)
class Never(Condition):
    """An unrecognised or malformed condition: it never matches (spec)."""
    reason: str = ""

    def holds(self, view: EventView) -> bool:
        return False


@dataclass(frozen=True)
class EventMatch(Condition):
    path: tuple[str, ...]
    pattern: Any  # str, or USER

    @property
    def user_dependent(self) -> bool:  # type: ignore[override]
        return self.pattern is USER

    @property
    def words(self) -> bool:
        return self.path == BODY_PATH

    def holds(self, view: EventView) -> bool:
        value = view.lookup(self.path)
        if not isinstance(value, str):
            return False
        g = compile_glob(self.pattern)
        low = view.lower(value)
        return g.search_words(low) if self.words else g.fullmatch(low)

    def matching_users(self, view: EventView, users: set[str]) -> set[str]:
        if self.pattern is not USER:
            return super().matching_users(view, users)
        value = view.lookup(self.path)
        if not isinstance(value, str):
            return set()
        low = view.lower(value)
        out = set()
        for u in users:
            if "*" in u or "?" in u:
                g = compile_glob(u)
                ok = g.search_words(low) if self.words else g.fullmatch(low)
            else:
                ok = contains_words(low, u.lower()) if self.words else low == u.lower()
            if ok:
                out.add(u)
        return out


@dataclass(frozen=True)
class PropertyIs(Condition):
    path: tuple[str, ...]
    value: Any  # scalar, or USER
    value_type: type  # True and 1 are equal in Python; the cache must not confuse them

    @property
    def user_dependent(self) -> bool:  # type: ignore[override]
        return self.value is USER

    def holds(self, view: EventView) -> bool:
        return same_value(view.lookup(self.path), self.value)

    def matching_users(self, view: EventView, users: set[str]) -> set[str]:
        if self.value is not USER:
            return super().matching_users(view, users)
        value = view.lookup(self.path)
        return {value} if isinstance(value, str) and value in users else set()


@dataclass(frozen=True)
class PropertyContains(Condition):
    path: tuple[str, ...]
    value: Any  # scalar, or USER
    value_type: type

    @property
    def user_dependent(self) -> bool:  # type: ignore[override]
        return self.value is USER

    def holds(self, view: EventView) -> bool:
        values = view.lookup(self.path)
        return isinstance(values, list) and any(same_value(v, self.value) for v in values)

    def matching_users(self, view: EventView, users: set[str]) -> set[str]:
        if self.value is not USER:
            return super().matching_users(view, users)
        values = view.lookup(self.path)
        if not isinstance(values, list):
            return set()
        return {v for v in values if isinstance(v, str) and v in users}


@dataclass(frozen=True)
class ContainsDisplayName(Condition):
    """Deprecated (v1.17) but still defined: the owner's display name in the room occurs in
    content.body between word boundaries."""

    @property
    def user_dependent(self) -> bool:  # type: ignore[override]
        return True

    def holds(self, view: EventView) -> bool:  # pragma: no cover - always user-dependent
        return False

    def matching_users(self, view: EventView, users: set[str]) -> set[str]:
        body = view.lookup(BODY_PATH)
        if not isinstance(body, str):
            return set()
        low = view.lower(body)
        out = set()
        for u in users:
            name = view.display_names.get(u)
            if isinstance(name, str) and name.strip() and contains_words(low, name.lower()):
                out.add(u)
        return out


@dataclass(frozen=True)
class RoomMemberCount(Condition):
    op: str
    count: int

    def holds(self, view: EventView) -> bool:
        n = view.member_count
        return {"==": n == self.count, "<": n < self.count, ">": n > self.count,
                "<=": n <= self.count, ">=": n >= self.count}[self.op]


@dataclass(frozen=True)
class SenderNotificationPermission(Condition):
    key: str

    def holds(self, view: EventView) -> bool:
        return view.sender_power >= view.notification_level(self.key)


def compile_condition(cond: Any) -> Condition:
    """A condition object of a rule (spec PushCondition) as something to evaluate; anything
    unrecognised or missing its parameters never matches."""
    if not isinstance(cond, Mapping):
        return Never("not an object")
    kind = cond.get("kind")
    key = cond.get("key")
    if kind == "event_match":
        pattern = cond.get("pattern")
        if not isinstance(key, str) or not (isinstance(pattern, str) or pattern is USER):
            return Never("event_match needs key and pattern")
        return EventMatch(parse_path(key), pattern)
    if kind in ("event_property_is", "event_property_contains"):
        if not isinstance(key, str) or "value" not in cond:
            return Never(f"{kind} needs key and value")
        value = cond["value"]
        if value is not USER and not _scalar(value):
            return Never(f"{kind} value must be a non-compound canonical JSON value")
        cls = PropertyIs if kind == "event_property_is" else PropertyContains
        return cls(parse_path(key), value, type(value))
    if kind == "contains_display_name":
        return ContainsDisplayName()
    if kind == "room_member_count":
        is_ = cond.get("is")
        m = _MEMBER_COUNT.fullmatch(is_) if isinstance(is_, str) else None
        if m is None:
            return Never("room_member_count needs 'is'")
        return RoomMemberCount(m.group(1) or "==", int(m.group(2)))
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return Never("sender_notification_permission needs key")
        return SenderNotificationPermission(key)
    return Never(f"unknown condition kind {kind!r}")


# --- actions -----------------------------------------------------------------------------------

def clean_actions(actions: Iterable[Any]) -> list[Any]:
    """Actions without the historical dont_notify and coalesce, which MUST be ignored."""
    return [a for a in actions if not (isinstance(a, str) and a in HISTORICAL_ACTIONS)]


def tweaks_of(actions: Iterable[Any]) -> dict[str, Any]:
    """The set_tweak actions as the gateway's ``tweaks``; highlight without value is true."""
    tweaks: dict[str, Any] = {}
    for a in actions:
        if isinstance(a, Mapping) and isinstance(a.get("set_tweak"), str):
            name = a["set_tweak"]
            if "value" in a:
                tweaks[name] = a["value"]
            elif name == "highlight":
                tweaks[name] = True
    return tweaks


def is_highlight(actions: Iterable[Any]) -> bool:
    return tweaks_of(actions).get("highlight") is True


def is_notify(actions: Iterable[Any]) -> bool:
    return any(a == "notify" for a in actions)


# --- rules and rulesets ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CompiledRule:
    kind: str
    rule_id: str
    independent: tuple[Condition, ...]
    dependent: tuple[Condition, ...]
    actions: tuple[Any, ...]
    notify: bool
    highlight: bool


def compile_rule(kind: str, rule_id: str, conditions: Iterable[Any], actions: Iterable[Any]
                 ) -> CompiledRule:
    conds = [compile_condition(c) for c in conditions]
    acts = tuple(clean_actions(actions))
    return CompiledRule(kind, rule_id, tuple(c for c in conds if not c.user_dependent),
                        tuple(c for c in conds if c.user_dependent), acts, is_notify(acts),
                        is_highlight(acts))


class Ruleset:
    """The enabled rules of one user (or of every user sharing a template), in priority order."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules = tuple(rules)

    def evaluate(self, view: EventView, users: Iterable[str]) -> dict[str, CompiledRule]:
        """user -> the first rule that matches the event for them (users no rule matches are
        left out). Users here must all own this ruleset."""
        out: dict[str, CompiledRule] = {}
        for rule, matched in self.evaluate_groups(view, set(users)):
            for u in matched:
                out[u] = rule
        return out

    def evaluate_groups(self, view: EventView, users: set[str]
                        ) -> list[tuple[CompiledRule, set[str]]]:
        """The rules that match, each with the users it is the first match for (users no rule
        matches are left out): the per-user result without a per-user step when most users
        share one outcome."""
        remaining = users
        out: list[tuple[CompiledRule, set[str]]] = []
        holds = view.holds
        for rule in self.rules:
            if not remaining:
                break
            ok = True
            for c in rule.independent:
                if not holds(c):
                    ok = False
                    break
            if not ok:
                continue
            matched = remaining
            for cond in rule.dependent:
                matched = cond.matching_users(view, matched)
                if not matched:
                    break
            if not matched:
                continue
            out.append((rule, matched))
            if matched is remaining:
                break
            remaining = remaining - matched
        return out

    def evaluate_one(self, view: EventView, user_id: str) -> CompiledRule | None:
        return self.evaluate(view, [user_id]).get(user_id)
