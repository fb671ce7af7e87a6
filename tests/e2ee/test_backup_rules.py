"""The spec's rule for which of two backed-up keys of one session the server keeps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from homeserver.e2ee.room_keys import parse_version, replaces
from storage.room_keys import BackupKey


@dataclass(frozen=True)
class Meta:
    first_message_index: int
    forwarded_count: int
    is_verified: bool


@pytest.mark.parametrize("stored, new, expected", [
    # (1) verification decides first, whatever the index and forward count say.
    (Meta(0, 0, False), Meta(5, 3, True), True),
    (Meta(5, 3, True), Meta(0, 0, False), False),  # Synapse would take the lower index here
    # (2) equal verification: the lower first_message_index wins, whatever the forward count.
    (Meta(5, 0, True), Meta(2, 9, True), True),  # Synapse would keep the lower forward count
    (Meta(2, 9, True), Meta(5, 0, True), False),
    (Meta(5, 0, False), Meta(2, 9, False), True),
    (Meta(2, 0, False), Meta(5, 0, False), False),
    # (3) equal verification and index: the lower forwarded_count wins.
    (Meta(3, 2, True), Meta(3, 1, True), True),
    (Meta(3, 1, True), Meta(3, 2, True), False),
    (Meta(3, 2, False), Meta(3, 0, False), True),
    (Meta(3, 0, False), Meta(3, 2, False), False),
    # Equal in all three: the stored key stays.
    (Meta(3, 1, True), Meta(3, 1, True), False),
    (Meta(0, 0, False), Meta(0, 0, False), False),
])
def test_better_key_rule(stored: Meta, new: Meta, expected: bool) -> None:
    assert replaces(stored, new) is expected


def test_rule_is_a_strict_order() -> None:
    """Of two different keys exactly one replaces the other; a key never replaces itself."""
    metas = [Meta(i, f, v) for i in range(3) for f in range(3) for v in (False, True)]
    for a in metas:
        assert not replaces(a, a)
        for b in metas:
            if a != b:
                assert replaces(a, b) != replaces(b, a), (a, b)


def test_rule_takes_stored_rows() -> None:
    stored = BackupKey(4, 0, False, '{"ciphertext":"old"}')
    better = BackupKey(4, 0, True, '{"ciphertext":"new"}')
    assert replaces(stored, better) and not replaces(better, stored)


@pytest.mark.parametrize("text, number", [
    ("1", 1), ("42", 42), ("007", None), ("0", None), ("", None), ("-1", None), ("1.0", None), (" 1", None),
    ("１", None), ("abc", None), ("9" * 19, None),
])
def test_parse_version(text: str, number: int | None) -> None:
    assert parse_version(text) == number
