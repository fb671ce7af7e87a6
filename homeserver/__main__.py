"""`python -m homeserver` / `hearth`: run the server, or generate a config with --generate-config."""

from __future__ import annotations

import argparse
import gc
import logging
import logging.config
import os
import secrets
import sys
from typing import Any

import yaml

from homeserver.config import Config, ConfigError, generate_config_text, load_config

DEFAULT_CONFIG = "homeserver.yaml"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hearth", description="Hearth, a Matrix homeserver.")
    p.add_argument("-c", "--config-path", "--config", dest="config", default=None,
                   help=f"the YAML config file (default: ./{DEFAULT_CONFIG}, generated on first run)")
    p.add_argument("--generate-config", action="store_true",
                   help="write a new config file (and signing key) and exit")
    p.add_argument("-H", "--server-name",
                   help="the server name, with --generate-config or on first run")
    p.add_argument("--report-stats", choices=["yes", "no"], default="no",
                   help="accepted for Synapse compatibility; Hearth never reports statistics home")
    p.add_argument("--generate-keys", action="store_true",
                   help="generate the signing key named in the config if missing, and exit")
    p.add_argument("--public-baseurl", help="with --generate-config: the public client URL")
    p.add_argument("--open-private-ports", action="store_true",
                   help="with --generate-config or on first run: listen on all interfaces (0.0.0.0), "
                        "not only 127.0.0.1, as in a container")
    p.add_argument("--http-port", type=int, default=8008,
                   help="with --generate-config or on first run: the HTTP listener's port "
                        "(default 8008)")
    return p.parse_args(argv)


def _setup_logging(config: Config) -> None:
    """Apply the dictConfig in log_config, or log INFO and above to stderr."""
    if config.log_config:
        try:
            with open(config.log_config, encoding="utf-8") as f:
                logging.config.dictConfig(yaml.safe_load(f))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError,
                AttributeError, ImportError) as e:
            raise ConfigError(f"{config.config_path}: 'log_config': cannot use "
                              f"{config.log_config}: {e}") from None
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def generate(path: str, server_name: str, public_baseurl: str | None = None, *,
             port: int = 8008, open_ports: bool = False) -> None:
    """Write a new config file and its signing key; never overwrites an existing file."""
    if os.path.exists(path):
        raise ConfigError(f"{path}: already exists; not overwriting it")
    try:
        text = generate_config_text(server_name, registration_shared_secret=secrets.token_urlsafe(32),
                                    public_baseurl=public_baseurl, port=port,
                                    bind_addresses=("0.0.0.0",) if open_ports else ("127.0.0.1",))
    except ValueError as e:
        raise ConfigError(f"{path}: not generated: {e}") from None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the config file: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    _ensure_signing_key(load_config(path))


def _ensure_signing_key(config: Config) -> None:
    from homeserver.server import load_or_create_signing_key
    try:
        load_or_create_signing_key(config.signing_key_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{config.config_path}: 'signing_key_path': {e}") from None


def _first_run_hint(config: Config) -> str:
    port = config.listeners[0].port
    return (f"Create the first admin user with:\n"
            f"    register_new_matrix_user -c {config.config_path} -a http://127.0.0.1:{port}\n"
            f"(or: python -m scripts.register_new_matrix_user -c {config.config_path} -a "
            f"http://127.0.0.1:{port})")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    path = args.config or DEFAULT_CONFIG
    try:
        if args.generate_config:
            if not args.server_name:
                print("--generate-config needs --server-name", file=sys.stderr)
                return 2
            generate(path, args.server_name, args.public_baseurl, port=args.http_port,
                     open_ports=args.open_private_ports)
            print(f"Wrote {path} and its signing key. Start the server with: hearth -c {path}")
            return 0
        if not os.path.exists(path):
            if args.config:
                raise ConfigError(f"{path}: no such config file (create one with --generate-config)")
            # First run without a config: generate one for localhost, embedded SQLite.
            server_name = args.server_name or "localhost"
            generate(path, server_name, args.public_baseurl, port=args.http_port,
                     open_ports=args.open_private_ports)
            print(f"First run: wrote {os.path.abspath(path)} (server_name {server_name}, SQLite, "
                  f"port {args.http_port}).", flush=True)
        config = load_config(path)
        if args.generate_keys:
            _ensure_signing_key(config)
            return 0
        _setup_logging(config)
    except ConfigError as e:
        print(f"Configuration error: {e}", file=sys.stderr)
        return 1
    return _run(config)


def _run(config: Config) -> int:
    from twisted.internet import defer, reactor

    from homeserver.server import start

    failed: list[BaseException] = []

    async def boot() -> None:
        try:
            await start(config, reactor)
            if config.pid_file:
                _write_pid_file(config.pid_file, reactor)
        except Exception as e:
            failed.append(e)
            logging.getLogger("homeserver").error("start-up failed: %s", e)
            reactor.stop()
            return
        print(f"Hearth is running as {config.server_name}.\n{_first_run_hint(config)}", flush=True)
        gc.collect()
        gc.freeze()

    # The reactor thread and the database threads share the GIL: with CPython's default 5 ms
    # switch interval a database call that returns while the reactor is busy waits up to 5 ms
    # to run again. A shorter interval hands the GIL back sooner (measured in bench/).
    sys.setswitchinterval(0.0005)
    # Garbage collection: CPython's default thresholds run a young collection every 700
    # allocations and a full one, which walks every cached event and state map, every 100 of
    # those; under load that full walk paused the reactor for up to 60 ms (measured in bench/).
    # Fewer, larger young collections, and the objects of start-up frozen out of every walk.
    gc.set_threshold(10_000, 20, 50)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(boot()))
    reactor.run()
    return 1 if failed else 0


def _write_pid_file(path: str, reactor: Any) -> None:
    """Write our pid to ``path`` and remove the file again at shutdown."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")

    def remove() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    reactor.addSystemEventTrigger("after", "shutdown", remove)


if __name__ == "__main__":
    sys.exit(main())
