"""Typed configuration read from YAML, with Synapse's key names wherever the concept is the same.

Every top-level key is declared once in ``_TOP_LEVEL`` below, nested ones in their readers;
anything not declared stops start-up with a message naming the key and the file, and so does a
value of the wrong type or range.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml


class ConfigError(Exception):
    """A problem with the configuration file; the message names the file and the key."""


# --- value parsers -----------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                   "w": 7 * 86_400_000, "y": 365 * 86_400_000}
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_duration_ms(value: Any) -> int:
    """'5m', '28d', '1y' or a plain integer of milliseconds, as Synapse reads durations."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m', '28d' or milliseconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d|w|y)?\s*", value)
        if m:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2) or "ms"]
    raise ValueError("expected a duration such as '30s', '5m', '28d' or milliseconds")


def parse_size(value: Any) -> int:
    """'50M', '10K' or a plain number of bytes, as Synapse reads sizes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '50M' or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", value.upper())
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError("expected a size such as '50M' or a number of bytes")


def _server_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a server name such as 'example.com' or 'example.com:8448'")
    host = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]{1,255})"
    if not re.fullmatch(host + r"(:\d{1,5})?", value):
        raise ValueError("expected a server name such as 'example.com' or 'example.com:8448'")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value
    return parse


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("expected a non-negative number")
    return float(value)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value if value.endswith("/") else value + "/"


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file path")
    return value


def _mapping(value: Any) -> dict:
    # A section whose sub-keys are all commented out loads as null: treat it as empty.
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of {what}")
    return tuple(value)


def _opt_duration(value: Any) -> int | None:
    return None if value is None else parse_duration_ms(value)


def _ip_ranges(value: Any) -> tuple[str, ...]:
    """A list of CIDR ranges ('10.0.0.0/8', 'fe80::/10'); a bare address is a /32 or /128."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of IP ranges such as '10.0.0.0/8'")
    out = []
    for v in value:
        try:
            out.append(str(ipaddress.ip_network(v.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP range such as '10.0.0.0/8'") from None
    return tuple(out)


def _items(value: Any, keys: set[str], what: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"expected a list of mappings with {what}")
    for i, item in enumerate(value):
        for k in item:
            if k not in keys:
                raise ValueError(f"item {i}: unknown key {k!r}; expected {what}")
    return value


def _thumbnail_sizes(value: Any) -> tuple["ThumbnailSize", ...]:
    out = []
    for i, item in enumerate(_items(value, {"width", "height", "method"}, "width, height, method")):
        try:
            width, height = _int(1, 10_000)(item.get("width")), _int(1, 10_000)(item.get("height"))
        except ValueError as e:
            raise ValueError(f"item {i}: width and height: {e}") from None
        method = item.get("method", "scale")
        if method not in ("crop", "scale"):
            raise ValueError(f"item {i}: method must be 'crop' or 'scale'")
        out.append(ThumbnailSize(width, height, method))
    if not out:
        raise ValueError("expected at least one thumbnail size")
    return tuple(out)


def _upload_limits(value: Any) -> tuple["UploadLimit", ...]:
    out = []
    for i, item in enumerate(_items(value, {"time_period", "max_size"}, "time_period, max_size")):
        try:
            period, size = parse_duration_ms(item.get("time_period")), parse_size(item.get("max_size"))
        except ValueError as e:
            raise ValueError(f"item {i}: {e}") from None
        if period <= 0:
            raise ValueError(f"item {i}: time_period must be positive")
        out.append(UploadLimit(period, size))
    return tuple(out)


# --- typed sections ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ThumbnailSize:
    width: int
    height: int
    method: str  # "crop" or "scale"


@dataclass(frozen=True)
class UploadLimit:
    """At most ``max_size`` bytes uploaded per user in any ``time_period_ms`` (Synapse's)."""
    time_period_ms: int
    max_size: int


# Synapse's default sizes, so clients that know them get exact fits.
DEFAULT_THUMBNAIL_SIZES = (ThumbnailSize(32, 32, "crop"), ThumbnailSize(96, 96, "crop"),
                           ThumbnailSize(320, 240, "scale"), ThumbnailSize(640, 480, "scale"),
                           ThumbnailSize(800, 600, "scale"))

# Special-use ranges (IANA registries) a URL preview must never reach: loopback, private,
# link-local, shared, documentation, multicast, reserved, and IPv6 transition ranges that
# can embed them.
DEFAULT_PREVIEW_IP_BLACKLIST = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)


@dataclass(frozen=True)
class MediaConfig:
    """The media repository's keys, besides max_upload_size and media_store_path."""
    enable_authenticated_media: bool = True
    max_image_pixels: int = 32 * 1024 * 1024
    thumbnail_sizes: tuple[ThumbnailSize, ...] = DEFAULT_THUMBNAIL_SIZES
    max_pending_media_uploads: int = 5
    unused_expiration_time_ms: int = 86_400_000
    upload_limits: tuple[UploadLimit, ...] = ()
    local_media_lifetime_ms: int | None = None
    remote_media_lifetime_ms: int | None = None
    url_preview_enabled: bool = False
    url_preview_ip_range_blacklist: tuple[str, ...] = DEFAULT_PREVIEW_IP_BLACKLIST
    max_spider_size: int = 10 * 1024 * 1024
    url_preview_timeout_ms: int = 10_000


# Outgoing federation requests never reach these unless ip_range_whitelist lets them (SSRF).
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "0.0.0.0/8", "255.255.255.255/32",
    "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10", "::/128",
)


@dataclass(frozen=True)
class TrustedKeyServer:
    server_name: str
    verify_keys: Mapping[str, str] | None = None  # key id -> unpadded base64; None = fetch


@dataclass(frozen=True)
class FederationConfig:
    """Server-server settings (Synapse's key names)."""
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    custom_ca_list: tuple[str, ...] = ()          # federation_custom_ca_list
    ip_range_blacklist: tuple[str, ...] = DEFAULT_IP_RANGE_BLACKLIST
    ip_range_whitelist: tuple[str, ...] = ()
    domain_whitelist: tuple[str, ...] | None = None  # federation_domain_whitelist
    trusted_key_servers: tuple[TrustedKeyServer, ...] = ()
    old_signing_keys: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # id -> (key, expired_ts)
    key_refresh_interval_ms: int = 86_400_000
    min_retry_interval_ms: int = 600_000          # federation.destination_min_retry_interval
    retry_multiplier: float = 2.0                 # federation.destination_retry_multiplier
    max_retry_interval_ms: int = 7 * 86_400_000   # federation.destination_max_retry_interval
    allow_public_rooms_over_federation: bool = False
    client_timeout_ms: int = 60_000


@dataclass(frozen=True)
class ListenerConfig:
    port: int
    bind_addresses: tuple[str, ...]
    type: str
    tls: bool
    x_forwarded: bool
    resources: tuple[str, ...]


@dataclass(frozen=True)
class DatabaseConfig:
    name: str  # "sqlite3" or "psycopg2"
    args: Mapping[str, Any]


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst_count: float


@dataclass(frozen=True)
class PasswordPolicy:
    enabled: bool = False
    minimum_length: int = 0
    require_digit: bool = False
    require_symbol: bool = False
    require_lowercase: bool = False
    require_uppercase: bool = False


@dataclass(frozen=True)
class Config:
    config_path: str
    server_name: str
    public_baseurl: str
    listeners: tuple[ListenerConfig, ...]
    database: DatabaseConfig
    signing_key_path: str
    enable_registration: bool
    enable_registration_without_verification: bool
    registration_shared_secret: str | None
    registration_requires_token: bool
    allow_guest_access: bool
    bcrypt_rounds: int
    password_enabled: bool
    password_policy: PasswordPolicy
    max_upload_size: int
    max_json_body_size: int
    max_json_depth: int
    media_store_path: str
    rc_message: RateLimit
    rc_registration: RateLimit
    rc_login_address: RateLimit
    rc_login_account: RateLimit
    rc_login_failed_attempts: RateLimit
    rc_client_ip: RateLimit
    user_ips_max_age_ms: int
    refreshable_access_token_lifetime_ms: int
    refresh_token_lifetime_ms: int | None
    serve_server_wellknown: bool
    serve_client_wellknown: bool
    extra_well_known_client_content: Mapping[str, Any]
    log_config: str | None
    pid_file: str | None
    presence_enabled: bool = True
    push_enabled: bool = True
    media: MediaConfig = field(default_factory=MediaConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.config_path))


# --- parsing -----------------------------------------------------------------------------------

_TOP_LEVEL: dict[str, tuple[Callable[[Any], Any], Any]] = {
    # key: (parser, default); a default of ... means required.
    "server_name": (_server_name, ...),
    "public_baseurl": (_url, None),
    "listeners": (lambda v: v, None),
    "database": (lambda v: v, None),
    "signing_key_path": (_path, None),
    "enable_registration": (_bool, False),
    "enable_registration_without_verification": (_bool, False),
    "registration_shared_secret": (_opt_str, None),
    "registration_shared_secret_path": (lambda v: None if v is None else _path(v), None),
    "registration_requires_token": (_bool, False),
    "allow_guest_access": (_bool, False),
    "bcrypt_rounds": (_int(4, 31), 12),
    "password_config": (_mapping, {}),
    "max_upload_size": (parse_size, "50M"),
    "max_json_body_size": (parse_size, "1M"),
    "max_json_depth": (_int(2, 1000), 100),
    "media_store_path": (_path, None),
    "rc_message": (_mapping, {}),
    "rc_registration": (_mapping, {}),
    "rc_login": (_mapping, {}),
    "rc_client_ip": (_mapping, {}),
    "user_ips_max_age": (parse_duration_ms, "365d"),
    "refreshable_access_token_lifetime": (parse_duration_ms, "5m"),
    "refresh_token_lifetime": (_opt_duration, None),
    "serve_server_wellknown": (_bool, False),
    # Default: served only when public_baseurl is set explicitly, as Synapse does; the implicit
    # https://<server_name>/ may not reach this server, and clients would follow it.
    "serve_client_wellknown": (lambda v: None if v is None else _bool(v), None),
    "extra_well_known_client_content": (_mapping, {}),
    "log_config": (lambda v: None if v is None else _path(v), None),
    "pid_file": (lambda v: None if v is None else _path(v), None),
    "report_stats": (_bool, False),
    "presence": (_mapping, {}),
    "push": (_mapping, {}),
    "enable_authenticated_media": (_bool, True),
    "max_image_pixels": (parse_size, "32M"),
    "thumbnail_sizes": (_thumbnail_sizes, None),
    "max_pending_media_uploads": (_int(1, 10_000), 5),
    "unused_expiration_time": (parse_duration_ms, "24h"),
    "media_upload_limits": (_upload_limits, []),
    "media_retention": (_mapping, {}),
    "url_preview_enabled": (_bool, False),
    "url_preview_ip_range_blacklist": (_ip_ranges, None),
    "max_spider_size": (parse_size, "10M"),
    "url_preview_timeout": (parse_duration_ms, "10s"),
    "tls_certificate_path": (_path, None),
    "tls_private_key_path": (_path, None),
    "federation_verify_certificates": (_bool, True),
    "federation_custom_ca_list": (lambda v: _str_list(v, "file paths"), []),
    "ip_range_blacklist": (_ip_ranges, None),
    "ip_range_whitelist": (_ip_ranges, []),
    "federation_domain_whitelist": (lambda v: None if v is None else _str_list(v, "server names"), None),
    "trusted_key_servers": (lambda v: v, []),
    "old_signing_keys": (_mapping, {}),
    "key_refresh_interval": (parse_duration_ms, "1d"),
    "federation": (_mapping, {}),
    "allow_public_rooms_over_federation": (_bool, False),
}

_RATE_DEFAULTS = {
    "rc_message": {"per_second": 0.2, "burst_count": 10},
    "rc_registration": {"per_second": 0.17, "burst_count": 3},
    "rc_login.address": {"per_second": 0.003, "burst_count": 5},
    "rc_login.account": {"per_second": 0.003, "burst_count": 5},
    "rc_login.failed_attempts": {"per_second": 0.17, "burst_count": 3},
    "rc_client_ip": {"per_second": 50, "burst_count": 200},
}

_DATABASE_KEYS = {"name", "args", "allow_unsafe_locale", "txn_limit"}
_DATABASE_ARGS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "sqlite3": {"database": _path, "cp_min": _int(1, 100), "cp_max": _int(1, 100)},
    "psycopg2": {
        "user": _str, "password": _str, "database": _str, "dbname": _str, "host": _str,
        "port": _int(1, 65535), "cp_min": _int(1, 100), "cp_max": _int(1, 100), "sslmode": _str,
        "application_name": _str, "keepalives": _int(0, 1), "keepalives_idle": _int(0, 86400),
        "keepalives_interval": _int(0, 86400), "keepalives_count": _int(0, 1000),
        "connect_timeout": _int(0, 86400),
    },
}
_LISTENER_KEYS = {"port", "bind_addresses", "type", "tls", "x_forwarded", "resources"}
_RESOURCE_NAMES = {"client", "federation", "keys", "media", "openid", "health"}


class _Reader:
    """Walks the YAML tree, producing errors that name the file and the dotted key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: '{key}': {message}")

    def unknown(self, key: str, known: set[str]) -> ConfigError:
        guess = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(known), n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        return ConfigError(f"{self.path}: unknown key '{key}'{hint}")

    def parse(self, key: str, parser: Callable[[Any], Any], value: Any) -> Any:
        try:
            return parser(value)
        except ValueError as e:
            raise self.fail(key, str(e)) from None

    def read_secret(self, key: str, path: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                secret = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail(key, f"cannot read {path}: {e}") from None
        if not secret:
            raise self.fail(key, f"{path} is empty")
        return secret

    def rate_limit(self, key: str, value: Any) -> RateLimit:
        default = _RATE_DEFAULTS[key]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a mapping with per_second and burst_count")
        for k in value:
            if k not in ("per_second", "burst_count"):
                raise self.unknown(f"{key}.{k}", {"per_second", "burst_count"})
        per_second = self.parse(f"{key}.per_second", _number, value.get("per_second", default["per_second"]))
        burst = self.parse(f"{key}.burst_count", _number, value.get("burst_count", default["burst_count"]))
        return RateLimit(per_second, burst)

    def listeners(self, value: Any) -> tuple[ListenerConfig, ...]:
        if value is None:
            value = [{"port": 8008, "bind_addresses": ["127.0.0.1"], "type": "http",
                      "resources": [{"names": ["client", "federation"]}]}]
        if not isinstance(value, list) or not value:
            raise self.fail("listeners", "expected a non-empty list of listeners")
        out = []
        for i, item in enumerate(value):
            key = f"listeners[{i}]"
            if not isinstance(item, dict):
                raise self.fail(key, "expected a mapping")
            for k in item:
                if k not in _LISTENER_KEYS:
                    raise self.unknown(f"{key}.{k}", _LISTENER_KEYS)
            if "port" not in item:
                raise self.fail(f"{key}.port", "is required")
            port = self.parse(f"{key}.port", _int(0, 65535), item["port"])
            binds = item.get("bind_addresses", ["127.0.0.1"])
            if not isinstance(binds, list) or not binds or not all(isinstance(b, str) for b in binds):
                raise self.fail(f"{key}.bind_addresses", "expected a non-empty list of addresses")
            ltype = item.get("type", "http")
            if ltype != "http":
                raise self.fail(f"{key}.type", "only 'http' listeners are supported")
            tls = self.parse(f"{key}.tls", _bool, item.get("tls", False))
            xff = self.parse(f"{key}.x_forwarded", _bool, item.get("x_forwarded", False))
            names: list[str] = []
            resources = item.get("resources", [{"names": ["client"]}])
            if not isinstance(resources, list):
                raise self.fail(f"{key}.resources", "expected a list")
            for j, res in enumerate(resources):
                rkey = f"{key}.resources[{j}]"
                if not isinstance(res, dict) or not isinstance(res.get("names"), list):
                    raise self.fail(rkey, "expected a mapping with a 'names' list")
                for k in res:
                    if k not in ("names", "compress"):
                        raise self.unknown(f"{rkey}.{k}", {"names", "compress"})
                if "compress" in res:
                    self.parse(f"{rkey}.compress", _bool, res["compress"])
                for name in res["names"]:
                    if name not in _RESOURCE_NAMES:
                        raise self.fail(f"{rkey}.names", f"unknown resource {name!r}; "
                                        f"expected some of {sorted(_RESOURCE_NAMES)}")
                    names.append(name)
            out.append(ListenerConfig(port, tuple(binds), ltype, tls, xff, tuple(names)))
        return tuple(out)

    def database(self, value: Any, data_dir: str) -> DatabaseConfig:
        if value is None:
            value = {"name": "sqlite3", "args": {"database": "homeserver.db"}}
        if not isinstance(value, dict):
            raise self.fail("database", "expected a mapping with 'name' and 'args'")
        for k in value:
            if k not in _DATABASE_KEYS:
                raise self.unknown(f"database.{k}", _DATABASE_KEYS)
        # Accepted for Synapse compatibility; Hearth has no use for them but checks their type.
        if "allow_unsafe_locale" in value:
            self.parse("database.allow_unsafe_locale", _bool, value["allow_unsafe_locale"])
        if "txn_limit" in value:
            self.parse("database.txn_limit", _int(0, 2**31 - 1), value["txn_limit"])
        name = value.get("name")
        if name not in _DATABASE_ARGS:
            raise self.fail("database.name", "expected 'sqlite3' or 'psycopg2'")
        args = value.get("args") or {}
        if not isinstance(args, dict):
            raise self.fail("database.args", "expected a mapping")
        args = dict(args)
        allowed = _DATABASE_ARGS[name]
        for k, v in args.items():
            if k not in allowed:
                raise self.unknown(f"database.args.{k}", set(allowed))
            self.parse(f"database.args.{k}", allowed[k], v)
        if args.get("cp_min", 1) > args.get("cp_max", 100):
            raise self.fail("database.args.cp_min", "must not be greater than cp_max")
        if name == "sqlite3":
            db = args.get("database", "homeserver.db")
            if db != ":memory:" and not os.path.isabs(db):
                db = os.path.join(data_dir, db)
            args["database"] = db
        return DatabaseConfig(name, args)

    def password_config(self, value: dict) -> tuple[bool, PasswordPolicy]:
        for k in value:
            if k not in ("enabled", "policy", "localdb_enabled"):
                raise self.unknown(f"password_config.{k}", {"enabled", "policy", "localdb_enabled"})
        enabled = self.parse("password_config.enabled", _bool, value.get("enabled", True))
        # Synapse's switch for its local password database; Hearth has only that one.
        self.parse("password_config.localdb_enabled", _bool, value.get("localdb_enabled", True))
        policy = value.get("policy") or {}
        if not isinstance(policy, dict):
            raise self.fail("password_config.policy", "expected a mapping")
        fields = {"enabled": _bool, "minimum_length": _int(0, 1024), "require_digit": _bool,
                  "require_symbol": _bool, "require_lowercase": _bool, "require_uppercase": _bool}
        parsed = {}
        for k, v in policy.items():
            if k not in fields:
                raise self.unknown(f"password_config.policy.{k}", set(fields))
            parsed[k] = self.parse(f"password_config.policy.{k}", fields[k], v)
        return enabled, PasswordPolicy(**parsed)


def _media_config(r: _Reader, values: dict[str, Any]) -> MediaConfig:
    retention = values["media_retention"]
    lifetimes: dict[str, int | None] = {}
    for k in retention:
        if k not in ("local_media_lifetime", "remote_media_lifetime"):
            raise r.unknown(f"media_retention.{k}", {"local_media_lifetime", "remote_media_lifetime"})
    for k in ("local_media_lifetime", "remote_media_lifetime"):
        lifetimes[k] = r.parse(f"media_retention.{k}", _opt_duration, retention.get(k))
        if lifetimes[k] == 0:
            raise r.fail(f"media_retention.{k}", "must be positive (leave it out to keep media)")
    if values["unused_expiration_time"] <= 0:
        raise r.fail("unused_expiration_time", "must be positive")
    if values["url_preview_timeout"] <= 0:
        raise r.fail("url_preview_timeout", "must be positive")
    blacklist = values["url_preview_ip_range_blacklist"]
    return MediaConfig(
        enable_authenticated_media=values["enable_authenticated_media"],
        max_image_pixels=values["max_image_pixels"],
        thumbnail_sizes=values["thumbnail_sizes"] or DEFAULT_THUMBNAIL_SIZES,
        max_pending_media_uploads=values["max_pending_media_uploads"],
        unused_expiration_time_ms=values["unused_expiration_time"],
        upload_limits=values["media_upload_limits"],
        local_media_lifetime_ms=lifetimes["local_media_lifetime"],
        remote_media_lifetime_ms=lifetimes["remote_media_lifetime"],
        url_preview_enabled=values["url_preview_enabled"],
        url_preview_ip_range_blacklist=(DEFAULT_PREVIEW_IP_BLACKLIST if blacklist is None
                                        else blacklist),
        max_spider_size=values["max_spider_size"],
        url_preview_timeout_ms=values["url_preview_timeout"],
    )


_FEDERATION_RETRY_KEYS = {"destination_min_retry_interval", "destination_retry_multiplier",
                          "destination_max_retry_interval", "client_timeout"}


def _federation_config(r: _Reader, values: dict[str, Any],
                       in_data_dir: Callable[[str | None, str], str]) -> FederationConfig:
    if not values["federation_verify_certificates"]:
        # Never a silent "don't verify": a private CA goes into federation_custom_ca_list.
        raise r.fail("federation_verify_certificates", "turning certificate verification off is "
                     "not supported; add the CA that signs your peers' certificates to "
                     "'federation_custom_ca_list' instead")
    cert, key = values["tls_certificate_path"], values["tls_private_key_path"]
    if (cert is None) != (key is None):
        raise r.fail("tls_certificate_path" if cert is None else "tls_private_key_path",
                     "tls_certificate_path and tls_private_key_path are set together")
    trusted: list[TrustedKeyServer] = []
    tks = values["trusted_key_servers"]
    if not isinstance(tks, list):
        raise r.fail("trusted_key_servers", "expected a list of {server_name, verify_keys}")
    for i, item in enumerate(tks):
        k = f"trusted_key_servers[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("server_name"), str):
            raise r.fail(k, "expected a mapping with a server_name")
        for sub in item:
            if sub not in ("server_name", "verify_keys", "accept_keys_insecurely"):
                raise r.unknown(f"{k}.{sub}", {"server_name", "verify_keys"})
        r.parse(f"{k}.server_name", _server_name, item["server_name"])
        vk = item.get("verify_keys")
        if vk is not None and (not isinstance(vk, dict) or not all(
                isinstance(a, str) and isinstance(b, str) for a, b in vk.items())):
            raise r.fail(f"{k}.verify_keys", "expected a mapping of key id to base64 key")
        trusted.append(TrustedKeyServer(item["server_name"], dict(vk) if vk else None))
    old: dict[str, tuple[str, int]] = {}
    for key_id, item in values["old_signing_keys"].items():
        k = f"old_signing_keys.{key_id}"
        if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
            raise r.fail(k, "key ids look like 'ed25519:abc'")
        if (not isinstance(item, dict) or not isinstance(item.get("key"), str)
                or not isinstance(item.get("expired_ts"), int)):
            raise r.fail(k, "expected a mapping with 'key' (base64) and 'expired_ts' (ms)")
        old[key_id] = (item["key"], item["expired_ts"])
    fed = values["federation"]
    for k in fed:
        if k not in _FEDERATION_RETRY_KEYS:
            raise r.unknown(f"federation.{k}", _FEDERATION_RETRY_KEYS)
    min_retry = r.parse("federation.destination_min_retry_interval", parse_duration_ms,
                        fed.get("destination_min_retry_interval", "10m"))
    max_retry = r.parse("federation.destination_max_retry_interval", parse_duration_ms,
                        fed.get("destination_max_retry_interval", "7d"))
    mult = r.parse("federation.destination_retry_multiplier", _number,
                   fed.get("destination_retry_multiplier", 2))
    timeout = r.parse("federation.client_timeout", parse_duration_ms, fed.get("client_timeout", "60s"))
    if min_retry <= 0 or max_retry < min_retry or mult < 1 or timeout <= 0:
        raise r.fail("federation", "retry intervals must be positive with min <= max, the "
                     "multiplier at least 1 and the timeout positive")
    blacklist = values["ip_range_blacklist"]
    return FederationConfig(
        tls_certificate_path=cert and in_data_dir(cert, ""),
        tls_private_key_path=key and in_data_dir(key, ""),
        custom_ca_list=tuple(in_data_dir(p, "") for p in values["federation_custom_ca_list"]),
        ip_range_blacklist=DEFAULT_IP_RANGE_BLACKLIST if blacklist is None else blacklist,
        ip_range_whitelist=values["ip_range_whitelist"],
        domain_whitelist=values["federation_domain_whitelist"],
        trusted_key_servers=tuple(trusted),
        old_signing_keys=old,
        key_refresh_interval_ms=values["key_refresh_interval"],
        min_retry_interval_ms=min_retry,
        retry_multiplier=float(mult),
        max_retry_interval_ms=max_retry,
        allow_public_rooms_over_federation=values["allow_public_rooms_over_federation"],
        client_timeout_ms=timeout,
    )


def parse_config(raw: Any, path: str) -> Config:
    """Validate a loaded YAML document and build the typed Config."""
    r = _Reader(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    for key in raw:
        if key not in _TOP_LEVEL:
            raise r.unknown(str(key), set(_TOP_LEVEL))
    values: dict[str, Any] = {}
    for key, (parser, default) in _TOP_LEVEL.items():
        if key in raw:
            values[key] = r.parse(key, parser, raw[key])
        elif default is ...:
            raise r.fail(key, "is required")
        elif default is None:
            values[key] = None
        else:
            values[key] = r.parse(key, parser, default)
    data_dir = os.path.dirname(os.path.abspath(path))
    server_name = values["server_name"]

    def in_data_dir(p: str | None, default: str) -> str:
        p = p or default
        return p if os.path.isabs(p) else os.path.join(data_dir, p)

    secret = values["registration_shared_secret"]
    secret_path = values["registration_shared_secret_path"]
    if secret_path is not None:
        if secret:
            raise r.fail("registration_shared_secret_path",
                         "cannot be set together with 'registration_shared_secret'")
        secret = r.read_secret("registration_shared_secret_path", in_data_dir(secret_path, ""))

    rc_login = values["rc_login"]
    for k in rc_login:
        if k not in ("address", "account", "failed_attempts"):
            raise r.unknown(f"rc_login.{k}", {"address", "account", "failed_attempts"})
    password_enabled, policy = r.password_config(values["password_config"])
    for k in values["presence"]:
        if k != "enabled":
            raise r.unknown(f"presence.{k}", {"enabled"})
    presence_enabled = r.parse("presence.enabled", _bool, values["presence"].get("enabled", True))
    for k in values["push"]:
        if k != "enabled":
            raise r.unknown(f"push.{k}", {"enabled"})
    push_enabled = r.parse("push.enabled", _bool, values["push"].get("enabled", True))
    media = _media_config(r, values)
    if (values["enable_registration"] and not values["enable_registration_without_verification"]
            and not values["registration_requires_token"]):
        raise ConfigError(
            f"{path}: 'enable_registration' is on with no verification: this server has no email "
            "verification, so also set 'enable_registration_without_verification: true' (anyone "
            "can register) or 'registration_requires_token: true'")
    listeners = r.listeners(values["listeners"])
    for i, lc in enumerate(listeners):
        if lc.tls and values["tls_certificate_path"] is None:
            raise r.fail(f"listeners[{i}].tls", "a TLS listener needs 'tls_certificate_path' and "
                         "'tls_private_key_path'")
    return Config(
        config_path=os.path.abspath(path),
        server_name=server_name,
        public_baseurl=values["public_baseurl"] or f"https://{server_name}/",
        listeners=listeners,
        database=r.database(values["database"], data_dir),
        signing_key_path=in_data_dir(values["signing_key_path"], f"{server_name}.signing.key"),
        enable_registration=values["enable_registration"],
        enable_registration_without_verification=values["enable_registration_without_verification"],
        registration_shared_secret=secret or None,
        registration_requires_token=values["registration_requires_token"],
        allow_guest_access=values["allow_guest_access"],
        bcrypt_rounds=values["bcrypt_rounds"],
        password_enabled=password_enabled,
        password_policy=policy,
        max_upload_size=values["max_upload_size"],
        max_json_body_size=values["max_json_body_size"],
        max_json_depth=values["max_json_depth"],
        media_store_path=in_data_dir(values["media_store_path"], "media_store"),
        rc_message=r.rate_limit("rc_message", values["rc_message"]),
        rc_registration=r.rate_limit("rc_registration", values["rc_registration"]),
        rc_login_address=r.rate_limit("rc_login.address", rc_login.get("address")),
        rc_login_account=r.rate_limit("rc_login.account", rc_login.get("account")),
        rc_login_failed_attempts=r.rate_limit("rc_login.failed_attempts", rc_login.get("failed_attempts")),
        rc_client_ip=r.rate_limit("rc_client_ip", values["rc_client_ip"]),
        user_ips_max_age_ms=values["user_ips_max_age"],
        refreshable_access_token_lifetime_ms=values["refreshable_access_token_lifetime"],
        refresh_token_lifetime_ms=values["refresh_token_lifetime"],
        serve_server_wellknown=values["serve_server_wellknown"],
        serve_client_wellknown=(values["public_baseurl"] is not None
                                if values["serve_client_wellknown"] is None
                                else values["serve_client_wellknown"]),
        extra_well_known_client_content=values["extra_well_known_client_content"],
        log_config=values["log_config"] and in_data_dir(values["log_config"], ""),
        pid_file=values["pid_file"] and in_data_dir(values["pid_file"], ""),
        presence_enabled=presence_enabled,
        push_enabled=push_enabled,
        media=media,
        federation=_federation_config(r, values, in_data_dir),
    )


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<: *anchor' merges may be overridden by explicit keys, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys (which PyYAML would otherwise drop silently)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str) -> Config:
    """Read and validate the YAML file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (create one with --generate-config)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not valid UTF-8") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, path)


def generate_config_text(server_name: str, *, registration_shared_secret: str,
                         public_baseurl: str | None = None, port: int = 8008,
                         bind_addresses: tuple[str, ...] = ("127.0.0.1",)) -> str:
    """The commented homeserver.yaml written by --generate-config and on first run.

    Raises ValueError naming the bad argument if one of them would make an invalid config.
    """
    try:
        _server_name(server_name)
    except ValueError as e:
        raise ValueError(f"server name {server_name!r}: {e}") from None
    try:
        _int(1, 65535)(port)
    except ValueError as e:
        raise ValueError(f"port {port!r}: {e}") from None
    baseurl = public_baseurl or f"http://127.0.0.1:{port}/"
    try:
        baseurl = _url(baseurl)
    except ValueError as e:
        raise ValueError(f"public base URL {baseurl!r}: {e}") from None
    q = json.dumps  # a JSON string is a valid double-quoted YAML scalar
    binds = ", ".join(q(b) for b in bind_addresses)
    return f"""\
# Hearth homeserver configuration. Key names follow Synapse's where the concept is the same;
# docs/CONFIG.md describes every key. Relative paths are relative to this file's folder.

server_name: {q(server_name)}
public_baseurl: {q(baseurl)}

listeners:
  - port: {port}
    bind_addresses: [{binds}]
    type: http
    x_forwarded: false
    resources:
      - names: [client, federation]

database:
  name: sqlite3
  args:
    database: homeserver.db
# For PostgreSQL:
#database:
#  name: psycopg2
#  args:
#    user: hearth
#    password: secret
#    database: hearth
#    host: 127.0.0.1
#    cp_min: 5
#    cp_max: 10

signing_key_path: {q(server_name + ".signing.key")}
media_store_path: media_store

# Registration is closed by default. Open registration with no email and no token needs both:
enable_registration: false
#enable_registration_without_verification: true
registration_requires_token: false
# Shared-secret registration, used by register_new_matrix_user to create admins:
registration_shared_secret: {q(registration_shared_secret)}

bcrypt_rounds: 12
max_upload_size: 50M

# IP addresses and user agents of sessions are kept at most this long:
user_ips_max_age: 365d
"""
