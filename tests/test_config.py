"""Config parsing: defaults, type checks that name the key and file, units, generation, paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver import config as cfg
from homeserver.config import (
    Config, ConfigError, RateLimit, generate_config_text, load_config, load_yaml, parse_config,
    parse_duration_ms, parse_size,
)

PATH = "/etc/hearth/homeserver.yaml"
DIR = "/etc/hearth"


def parse(overrides: dict[str, Any] | None = None, path: str = PATH) -> Config:
    return parse_config({"server_name": "example.com", **(overrides or {})}, path)


def error(overrides: dict[str, Any], path: str = PATH) -> str:
    with pytest.raises(ConfigError) as e:
        parse(overrides, path)
    return str(e.value)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- defaults ------------------------------------------------------------------------------------

def test_defaults() -> None:
    c = parse()
    assert c.config_path == PATH
    assert c.data_dir == DIR
    assert c.server_name == "example.com"
    assert c.public_baseurl == "https://example.com/"
    assert len(c.listeners) == 1
    lis = c.listeners[0]
    assert (lis.port, lis.bind_addresses, lis.type, lis.tls, lis.x_forwarded) == \
        (8008, ("127.0.0.1",), "http", False, False)
    assert set(lis.resources) == {"client", "federation"}
    assert c.database.name == "sqlite3"
    assert c.database.args == {"database": f"{DIR}/homeserver.db"}
    assert c.signing_key_path == f"{DIR}/example.com.signing.key"
    assert c.media_store_path == f"{DIR}/media_store"
    assert c.enable_registration is False
    assert c.enable_registration_without_verification is False
    assert c.registration_shared_secret is None
    assert c.registration_requires_token is False
    assert c.allow_guest_access is False
    assert c.bcrypt_rounds == 12
    assert c.password_enabled is True
    assert c.password_policy == cfg.PasswordPolicy()
    assert c.max_upload_size == 50 * 1024 * 1024
    assert c.max_json_body_size == 1024 * 1024
    assert c.max_json_depth == 100
    assert c.rc_message == RateLimit(0.2, 10)
    assert c.rc_registration == RateLimit(0.17, 3)
    assert c.rc_login_address == RateLimit(0.003, 5)
    assert c.rc_login_account == RateLimit(0.003, 5)
    assert c.rc_login_failed_attempts == RateLimit(0.17, 3)
    assert c.rc_client_ip == RateLimit(50, 200)
    assert c.user_ips_max_age_ms == 365 * 86_400_000
    assert c.refreshable_access_token_lifetime_ms == 5 * 60_000
    assert c.refresh_token_lifetime_ms is None
    assert c.serve_server_wellknown is False
    assert c.serve_client_wellknown is False  # public_baseurl is only implied
    assert c.extra_well_known_client_content == {}
    assert c.log_config is None and c.pid_file is None


def test_server_name_is_required() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({}, PATH)
    assert str(e.value) == f"{PATH}: 'server_name': is required"
    with pytest.raises(ConfigError, match="'server_name': is required"):
        parse_config(None, PATH)  # an empty file


@pytest.mark.parametrize("name", ["example.com", "example.com:8448", "localhost", "1.2.3.4:80",
                                  "[::1]:8448", "my-host.example"])
def test_valid_server_names(name: str) -> None:
    assert parse({"server_name": name}).server_name == name


@pytest.mark.parametrize("name", ["", "bad name", "example.com:port", "a/b", "example.com:123456",
                                  5, None, ["example.com"]])
def test_invalid_server_names(name: Any) -> None:
    msg = error({"server_name": name})
    assert msg.startswith(f"{PATH}: 'server_name': ")


def test_client_wellknown_follows_an_explicit_public_baseurl() -> None:
    assert parse({"public_baseurl": "https://m.example.com/"}).serve_client_wellknown is True
    assert parse({"public_baseurl": "https://m.example.com/",
                  "serve_client_wellknown": False}).serve_client_wellknown is False
    assert parse({"serve_client_wellknown": True}).serve_client_wellknown is True
    assert parse({"serve_client_wellknown": None}).serve_client_wellknown is False


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        parse_config(["server_name", "x"], PATH)


# --- every top-level key rejects a value of the wrong type ---------------------------------------

BAD_VALUES: dict[str, Any] = {
    "server_name": "not a name",
    "public_baseurl": "matrix.example.com",
    "listeners": {"port": 8008},
    "database": "sqlite3",
    "signing_key_path": 5,
    "enable_registration": "yes",
    "enable_registration_without_verification": 1,
    "registration_shared_secret": 1234,
    "registration_shared_secret_path": ["a"],
    "registration_requires_token": "true",
    "allow_guest_access": 0,
    "bcrypt_rounds": 3,
    "password_config": ["enabled"],
    "max_upload_size": "50 megabytes",
    "max_json_body_size": -1,
    "max_json_depth": 1,
    "media_store_path": "",
    "rc_message": 5,
    "rc_registration": [1, 2],
    "rc_login": "fast",
    "rc_client_ip": "fast",
    "user_ips_max_age": "a year",
    "refreshable_access_token_lifetime": True,
    "refresh_token_lifetime": "5 minutes",
    "serve_server_wellknown": "no",
    "serve_client_wellknown": "yes",
    "extra_well_known_client_content": "x",
    "log_config": 7,
    "pid_file": False,
    "report_stats": "no",
    "presence": "on",
    "push": "on",
    "enable_authenticated_media": "yes",
    "max_image_pixels": "many",
    "thumbnail_sizes": [{"width": 32}],
    "max_pending_media_uploads": 0,
    "unused_expiration_time": "a day",
    "media_upload_limits": [{"time_period": "1h"}],
    "media_retention": "90d",
    "url_preview_enabled": 1,
    "url_preview_ip_range_blacklist": ["10.0.0.0/33"],
    "max_spider_size": "ten megabytes",
    "url_preview_timeout": "soon",
    "tls_certificate_path": "",
    "tls_private_key_path": 3,
    "federation_verify_certificates": "yes",
    "federation_custom_ca_list": "/ca.pem",
    "ip_range_blacklist": ["nope"],
    "ip_range_whitelist": "127.0.0.1",
    "federation_domain_whitelist": [""],
    "trusted_key_servers": {"server_name": "x"},
    "old_signing_keys": "ed25519:a",
    "key_refresh_interval": "daily",
    "federation": ["x"],
    "allow_public_rooms_over_federation": "no",
}


def test_bad_values_cover_every_top_level_key() -> None:
    assert set(BAD_VALUES) == set(cfg._TOP_LEVEL)


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_top_level_type_check(key: str) -> None:
    msg = error({key: BAD_VALUES[key]})
    assert msg.startswith(f"{PATH}: '{key}'"), msg


@pytest.mark.parametrize("key,value,expected", [
    ("bcrypt_rounds", 31, 31), ("bcrypt_rounds", 4, 4),
    ("max_json_depth", 2, 2),
    ("enable_registration", True, True),
    ("public_baseurl", "https://matrix.example.com", "https://matrix.example.com/"),
    ("public_baseurl", "http://127.0.0.1:8008/", "http://127.0.0.1:8008/"),
    ("registration_shared_secret", "s3cret", "s3cret"),
    ("registration_shared_secret", "", None),
    ("extra_well_known_client_content", {"org.example": {"a": 1}}, {"org.example": {"a": 1}}),
])
def test_top_level_values_accepted(key: str, value: Any, expected: Any) -> None:
    extra = {"enable_registration_without_verification": True} if key == "enable_registration" else {}
    assert getattr(parse({key: value, **extra}), key) == expected


def test_open_registration_needs_a_verification_choice() -> None:
    msg = error({"enable_registration": True})
    assert msg.startswith(f"{PATH}: 'enable_registration' is on with no verification")
    assert "enable_registration_without_verification" in msg
    assert parse({"enable_registration": True, "registration_requires_token": True}).enable_registration


@pytest.mark.parametrize("key,value", [("bcrypt_rounds", 32), ("bcrypt_rounds", True),
                                       ("bcrypt_rounds", 12.5), ("max_json_depth", 1001)])
def test_integer_ranges(key: str, value: Any) -> None:
    assert error({key: value}).startswith(f"{PATH}: '{key}': expected an integer")


def test_unknown_top_level_key_is_named_with_a_hint() -> None:
    msg = error({"enable_registraton": True})
    assert msg == f"{PATH}: unknown key 'enable_registraton' (did you mean 'enable_registration'?)"
    assert error({"macaroon_secret_key": "x"}) == f"{PATH}: unknown key 'macaroon_secret_key'"


def test_null_sections_count_as_empty() -> None:
    c = parse({"password_config": None, "rc_login": None, "rc_message": None})
    assert c.password_enabled is True
    assert c.rc_message == RateLimit(0.2, 10)


# --- nested keys ---------------------------------------------------------------------------------

LISTENER = {"port": 8448, "type": "http", "resources": [{"names": ["client"]}]}


@pytest.mark.parametrize("overrides,key", [
    ({"listeners": [dict(LISTENER, foo=1)]}, "listeners[0].foo"),
    ({"listeners": [LISTENER, dict(LISTENER, bind_address="::")]}, "listeners[1].bind_address"),
    ({"listeners": [dict(LISTENER, resources=[{"names": ["client"], "foo": 1}])]},
     "listeners[0].resources[0].foo"),
    ({"database": {"name": "sqlite3", "args": {}, "foo": 1}}, "database.foo"),
    ({"database": {"name": "sqlite3", "args": {"database": "x.db", "foo": 1}}}, "database.args.foo"),
    ({"database": {"name": "psycopg2", "args": {"user": "u", "foo": 1}}}, "database.args.foo"),
    ({"rc_login": {"foo": {}}}, "rc_login.foo"),
    ({"rc_login": {"address": {"per_second": 1, "foo": 2}}}, "rc_login.address.foo"),
    ({"rc_message": {"per_second": 1, "burst": 2}}, "rc_message.burst"),
    ({"rc_registration": {"foo": 1}}, "rc_registration.foo"),
    ({"rc_client_ip": {"foo": 1}}, "rc_client_ip.foo"),
    ({"password_config": {"foo": True}}, "password_config.foo"),
    ({"password_config": {"policy": {"minimum_lenght": 8}}}, "password_config.policy.minimum_lenght"),
])
def test_nested_unknown_keys(overrides: dict[str, Any], key: str) -> None:
    msg = error(overrides)
    assert msg.startswith(f"{PATH}: unknown key '{key}'"), msg


def test_nested_unknown_key_hint() -> None:
    msg = error({"password_config": {"policy": {"minimum_lenght": 8}}})
    assert msg.endswith("(did you mean 'minimum_length'?)")
    assert error({"database": {"name": "psycopg2", "args": {"hots": "db"}}}).endswith(
        "(did you mean 'host'?)")


@pytest.mark.parametrize("overrides,key", [
    ({"listeners": []}, "listeners"),
    ({"listeners": ["http"]}, "listeners[0]"),
    ({"listeners": [{"type": "http"}]}, "listeners[0].port"),
    ({"listeners": [dict(LISTENER, port=70000)]}, "listeners[0].port"),
    ({"listeners": [dict(LISTENER, port="8008")]}, "listeners[0].port"),
    ({"listeners": [dict(LISTENER, bind_addresses=[])]}, "listeners[0].bind_addresses"),
    ({"listeners": [dict(LISTENER, bind_addresses="0.0.0.0")]}, "listeners[0].bind_addresses"),
    ({"listeners": [dict(LISTENER, type="metrics")]}, "listeners[0].type"),
    ({"listeners": [dict(LISTENER, tls="no")]}, "listeners[0].tls"),
    ({"listeners": [dict(LISTENER, x_forwarded=1)]}, "listeners[0].x_forwarded"),
    ({"listeners": [dict(LISTENER, resources="client")]}, "listeners[0].resources"),
    ({"listeners": [dict(LISTENER, resources=[{"names": "client"}])]}, "listeners[0].resources[0]"),
    ({"listeners": [dict(LISTENER, resources=[{"names": ["bogus"]}])]},
     "listeners[0].resources[0].names"),
    ({"listeners": [dict(LISTENER, resources=[{"names": ["client"], "compress": "x"}])]},
     "listeners[0].resources[0].compress"),
    ({"database": {"name": "mysql"}}, "database.name"),
    ({"database": {"args": {}}}, "database.name"),
    ({"database": {"name": "sqlite3", "args": ["x"]}}, "database.args"),
    ({"database": {"name": "sqlite3", "args": {"database": ""}}}, "database.args.database"),
    ({"database": {"name": "sqlite3", "args": {"cp_max": 0}}}, "database.args.cp_max"),
    ({"database": {"name": "sqlite3", "allow_unsafe_locale": "yes"}}, "database.allow_unsafe_locale"),
    ({"database": {"name": "psycopg2", "txn_limit": -1}}, "database.txn_limit"),
    ({"database": {"name": "psycopg2", "args": {"port": "5432"}}}, "database.args.port"),
    ({"database": {"name": "psycopg2", "args": {"password": 1234}}}, "database.args.password"),
    ({"database": {"name": "psycopg2", "args": {"cp_min": 5, "cp_max": 2}}}, "database.args.cp_min"),
    ({"rc_message": {"per_second": -1}}, "rc_message.per_second"),
    ({"rc_message": {"burst_count": "10"}}, "rc_message.burst_count"),
    ({"rc_login": {"account": 5}}, "rc_login.account"),
    ({"rc_login": {"failed_attempts": {"per_second": True}}}, "rc_login.failed_attempts.per_second"),
    ({"password_config": {"enabled": "no"}}, "password_config.enabled"),
    ({"password_config": {"localdb_enabled": "no"}}, "password_config.localdb_enabled"),
    ({"password_config": {"policy": "strict"}}, "password_config.policy"),
    ({"password_config": {"policy": {"minimum_length": -1}}}, "password_config.policy.minimum_length"),
    ({"password_config": {"policy": {"require_digit": "yes"}}}, "password_config.policy.require_digit"),
])
def test_nested_bad_values(overrides: dict[str, Any], key: str) -> None:
    msg = error(overrides)
    assert msg.startswith(f"{PATH}: '{key}': "), msg


def test_listener_values() -> None:
    c = parse({"listeners": [
        {"port": 8008, "bind_addresses": ["::1", "127.0.0.1"], "x_forwarded": True,
         "resources": [{"names": ["client"], "compress": False}, {"names": ["federation"]}]},
        {"port": 0, "tls": False},
    ]})
    a, b = c.listeners
    assert (a.port, a.bind_addresses, a.x_forwarded, a.resources) == \
        (8008, ("::1", "127.0.0.1"), True, ("client", "federation"))
    assert (b.port, b.tls, b.bind_addresses, b.resources) == (0, False, ("127.0.0.1",), ("client",))


def test_tls_listener_needs_a_certificate() -> None:
    # Without a certificate, accepting tls: true would silently serve plain HTTP.
    msg = error({"listeners": [dict(LISTENER, tls=True)]})
    assert msg.startswith(f"{PATH}: 'listeners[0].tls': a TLS listener needs 'tls_certificate_path'")
    c = parse({"listeners": [dict(LISTENER, tls=True)], "tls_certificate_path": "/x/cert.pem",
               "tls_private_key_path": "/x/key.pem"})
    assert c.listeners[0].tls and c.federation.tls_certificate_path == "/x/cert.pem"


def test_federation_settings() -> None:
    c = parse({"federation_custom_ca_list": ["/ca.pem"], "ip_range_whitelist": ["127.0.0.1"],
               "trusted_key_servers": [{"server_name": "notary.example", "verify_keys": {"ed25519:a": "AAAA"}}],
               "old_signing_keys": {"ed25519:old": {"key": "AAAA", "expired_ts": 5}},
               "federation": {"destination_min_retry_interval": "2s", "destination_max_retry_interval": "10s"}})
    f = c.federation
    assert f.custom_ca_list == ("/ca.pem",) and f.ip_range_whitelist == ("127.0.0.1/32",)
    assert "127.0.0.0/8" in f.ip_range_blacklist and f.min_retry_interval_ms == 2000
    assert f.trusted_key_servers[0].verify_keys == {"ed25519:a": "AAAA"}
    assert f.old_signing_keys == {"ed25519:old": ("AAAA", 5)}
    assert parse({}).federation.trusted_key_servers == ()
    assert "federation_custom_ca_list" in error({"federation_verify_certificates": False})
    assert "'federation.retry'" in error({"federation": {"retry": 1}}) or "federation.retry" in error(
        {"federation": {"retry": 1}})
    assert "tls_private_key_path" in error({"tls_certificate_path": "/c.pem"})
    assert "old_signing_keys.ed25519:x" in error({"old_signing_keys": {"ed25519:x": {"key": 1}}})


def test_postgres_database_args_are_kept() -> None:
    args = {"user": "hearth", "password": "pw", "database": "hearth", "host": "db", "port": 5432,
            "cp_min": 5, "cp_max": 10, "sslmode": "require", "keepalives_idle": 10}
    c = parse({"database": {"name": "psycopg2", "args": args, "allow_unsafe_locale": False,
                            "txn_limit": 0}})
    assert c.database.name == "psycopg2"
    assert c.database.args == args  # 'database' is a database name here, not a path


def test_password_config_values() -> None:
    c = parse({"password_config": {"enabled": False, "localdb_enabled": True, "policy": {
        "enabled": True, "minimum_length": 10, "require_digit": True, "require_symbol": True,
        "require_lowercase": True, "require_uppercase": True}}})
    assert c.password_enabled is False
    assert c.password_policy == cfg.PasswordPolicy(True, 10, True, True, True, True)


def test_rate_limit_values() -> None:
    c = parse({"rc_message": {"per_second": 1.5}, "rc_login": {"account": {"burst_count": 7}}})
    assert c.rc_message == RateLimit(1.5, 10)
    assert c.rc_login_account == RateLimit(0.003, 7)
    assert c.rc_login_address == RateLimit(0.003, 5)


# --- durations and sizes -------------------------------------------------------------------------

@pytest.mark.parametrize("value,ms", [
    (0, 0), (1500, 1500), ("1500", 1500), ("250ms", 250), ("30s", 30_000), ("5m", 300_000),
    ("2h", 7_200_000), ("28d", 28 * 86_400_000), ("1w", 7 * 86_400_000), ("1y", 365 * 86_400_000),
    (" 5m ", 300_000),
])
def test_durations(value: Any, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize("value", ["5x", "m", "-5m", "5 minutes", "1.5h", -1, 1.5, True, None, [5]])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(value)


def test_durations_in_config() -> None:
    c = parse({"user_ips_max_age": "28d", "refreshable_access_token_lifetime": 60000,
               "refresh_token_lifetime": "1w"})
    assert c.user_ips_max_age_ms == 28 * 86_400_000
    assert c.refreshable_access_token_lifetime_ms == 60_000
    assert c.refresh_token_lifetime_ms == 7 * 86_400_000
    assert parse({"refresh_token_lifetime": None}).refresh_token_lifetime_ms is None
    assert error({"user_ips_max_age": "5x"}) == (
        f"{PATH}: 'user_ips_max_age': expected a duration such as '30s', '5m', '28d' or milliseconds")


@pytest.mark.parametrize("value,size", [
    (0, 0), (1024, 1024), ("512", 512), ("10K", 10 * 1024), ("50M", 50 * 1024**2),
    ("50m", 50 * 1024**2), ("50MB", 50 * 1024**2), ("2G", 2 * 1024**3), (" 1K ", 1024),
])
def test_sizes(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["50T", "M", "-1M", "1.5M", "fifty", -1, 1.5, False, None])
def test_bad_sizes(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


def test_sizes_in_config() -> None:
    c = parse({"max_upload_size": "10M", "max_json_body_size": 65536})
    assert (c.max_upload_size, c.max_json_body_size) == (10 * 1024**2, 65536)
    assert error({"max_upload_size": "10T"}).startswith(f"{PATH}: 'max_upload_size': expected a size")


# --- the generated config ------------------------------------------------------------------------

def test_generated_config_parses() -> None:
    text = generate_config_text("example.org", registration_shared_secret="s3cr3t")
    c = parse_config(load_yaml(text), PATH)
    assert c.server_name == "example.org"
    assert c.public_baseurl == "http://127.0.0.1:8008/"
    assert [(lis.port, lis.bind_addresses) for lis in c.listeners] == [(8008, ("127.0.0.1",))]
    assert set(c.listeners[0].resources) == {"client", "federation"}
    assert c.registration_shared_secret == "s3cr3t"
    assert c.database.args["database"] == f"{DIR}/homeserver.db"
    assert c.signing_key_path == f"{DIR}/example.org.signing.key"
    assert c.enable_registration is False
    assert c.user_ips_max_age_ms == 365 * 86_400_000


def test_generated_config_options() -> None:
    text = generate_config_text("[::1]:8448", registration_shared_secret='we"ird: #secret',
                                public_baseurl="https://matrix.example.org", port=8118,
                                bind_addresses=("0.0.0.0", "::"))
    c = parse_config(load_yaml(text), PATH)
    assert c.server_name == "[::1]:8448"
    assert c.registration_shared_secret == 'we"ird: #secret'
    assert c.public_baseurl == "https://matrix.example.org/"
    assert c.listeners[0].port == 8118
    assert c.listeners[0].bind_addresses == ("0.0.0.0", "::")


def test_generated_config_round_trips() -> None:
    raw = load_yaml(generate_config_text("example.org", registration_shared_secret="abc"))
    again = yaml.safe_load(yaml.safe_dump(raw))
    assert again == raw
    assert parse_config(again, PATH) == parse_config(raw, PATH)


@pytest.mark.parametrize("kwargs,word", [
    ({"server_name": "bad name"}, "server name"),
    ({"server_name": "ok.example", "port": 0}, "port"),
    ({"server_name": "ok.example", "port": 70000}, "port"),
    ({"server_name": "ok.example", "public_baseurl": "ftp://x"}, "public base URL"),
])
def test_generate_refuses_bad_arguments(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        generate_config_text(registration_shared_secret="x", **kwargs)


# --- files and paths -----------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc"
    write(conf_dir / "secret.txt", "  from-a-file \n")
    path = write(conf_dir / "homeserver.yaml", """
server_name: example.com
database: {name: sqlite3, args: {database: data/hs.db}}
signing_key_path: keys/signing.key
media_store_path: media
log_config: log.yaml
pid_file: run/hearth.pid
registration_shared_secret_path: secret.txt
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config(os.path.relpath(path))
    d = str(conf_dir)
    assert c.config_path == path and c.data_dir == d
    assert c.database.args["database"] == f"{d}/data/hs.db"
    assert c.signing_key_path == f"{d}/keys/signing.key"
    assert c.media_store_path == f"{d}/media"
    assert c.log_config == f"{d}/log.yaml"
    assert c.pid_file == f"{d}/run/hearth.pid"
    assert c.registration_shared_secret == "from-a-file"


def test_absolute_paths_and_memory_database_are_kept() -> None:
    c = parse({"database": {"name": "sqlite3", "args": {"database": ":memory:"}},
               "signing_key_path": "/keys/k", "media_store_path": "/media", "pid_file": "/run/p"})
    assert c.database.args["database"] == ":memory:"
    assert (c.signing_key_path, c.media_store_path, c.pid_file) == ("/keys/k", "/media", "/run/p")


def test_shared_secret_path_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "homeserver.yaml")
    msg = error({"registration_shared_secret_path": "nope.txt"}, path)
    assert msg.startswith(f"{path}: 'registration_shared_secret_path': cannot read")
    assert "nope.txt" in msg
    write(tmp_path / "empty.txt", "\n")
    msg = error({"registration_shared_secret_path": "empty.txt"}, path)
    assert msg.startswith(f"{path}: 'registration_shared_secret_path': ") and "empty" in msg
    write(tmp_path / "s.txt", "x")
    msg = error({"registration_shared_secret_path": "s.txt", "registration_shared_secret": "y"}, path)
    assert msg.startswith(f"{path}: 'registration_shared_secret_path': cannot be set together")


def test_load_config_reads_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "h.yaml", "server_name: example.com\nbcrypt_rounds: 10\n"
                                      "max_upload_size: 10M\n")
    c = load_config(path)
    assert (c.server_name, c.bcrypt_rounds, c.max_upload_size) == ("example.com", 10, 10 * 1024**2)


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="missing.yaml: no such config file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))
    bad = write(tmp_path / "bad.yaml", "server_name: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value).startswith(f"{bad}: not valid YAML")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"server_name: caf\xe9.example\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(str(latin))
    unknown = write(tmp_path / "unknown.yaml", "server_name: a.example\nfoo: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(unknown)
    assert str(e.value) == f"{unknown}: unknown key 'foo'"


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", "server_name: a.example\nbcrypt_rounds: 10\n"
                                        "bcrypt_rounds: 11\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: not valid YAML")
    assert "'bcrypt_rounds' appears twice" in str(e.value) and "line 3" in str(e.value)
    nested = write(tmp_path / "dup2.yaml", "server_name: a.example\n"
                                           "database:\n  name: sqlite3\n  name: psycopg2\n")
    with pytest.raises(ConfigError, match="'name' appears twice"):
        load_config(nested)


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path / "merge.yaml", """
server_name: a.example
rc_message: &fast {per_second: 100, burst_count: 100}
rc_registration:
  <<: *fast
  burst_count: 5
""")
    c = load_config(path)
    assert c.rc_registration == RateLimit(100, 5)


def test_docker_postgres_snippet_is_a_valid_database_section() -> None:
    root = Path(__file__).resolve().parent.parent
    snippet = load_yaml((root / "docker" / "homeserver.postgres.yaml").read_text())
    c = parse(snippet)
    assert c.database.name == "psycopg2" and c.database.args["host"] == "postgres"
