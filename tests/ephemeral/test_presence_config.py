"""The presence switch: ``presence: {enabled: ...}`` as Synapse spells it."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.config import ConfigError, parse_config

PATH = "/etc/hearth/homeserver.yaml"


def parse(extra: dict[str, Any]) -> Any:
    return parse_config({"server_name": "example.com", **extra}, PATH)


def test_on_by_default() -> None:
    assert parse({}).presence_enabled is True
    assert parse({"presence": None}).presence_enabled is True
    assert parse({"presence": {}}).presence_enabled is True


def test_turned_off() -> None:
    assert parse({"presence": {"enabled": False}}).presence_enabled is False


@pytest.mark.parametrize("value,message", [
    ({"enabled": "no"}, f"{PATH}: 'presence.enabled': expected true or false"),
    ({"enable": False}, f"{PATH}: unknown key 'presence.enable' (did you mean 'enabled'?)"),
    ("off", f"{PATH}: 'presence': expected a mapping"),
])
def test_bad_values(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse({"presence": value})
    assert str(e.value) == message
