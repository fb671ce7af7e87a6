"""`python -m homeserver` / `hearth`: run the server, or generate a config with --generate-config."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import secrets
import sys

import yaml

from homeserver.config import Config, ConfigError, generate_config_text, load_config

DEFAULT_CONFIG = "homeserver.yaml"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hearth", description="Hearth, a Matrix homeserver.")
    p.add_argument("-c", "--config-path", "--config", dest="config", default=None,
                   help=f"the YAML config file (default: ./{DEFAULT_CONFIG}, generated on first run)")
    p.add_argument("--generate-config", action="store_true",
                   help="write a new config file (and signing key) and exit")
    p.add_argument("-H", "--server-name", help="the server name, with --generate-config")
    p.add_argument("--report-stats", choices=["yes", "no"], default="no",
                   help="accepted for Synapse compatibility; Hearth never reports statistics home")
    p.add_argument("--generate-keys", action="store_true",
                   help="generate the signing key named in the config if missing, and exit")
    p.add_argument("--public-baseurl", help="with --generate-config: the public client URL")
    return p.parse_args(argv)


def _setup_logging(config: Config | None) -> None:
    if config is not None and config.log_config:
        path = config.log_config
        if not os.path.isabs(path):
            path = os.path.join(config.data_dir, path)
        with open(path, encoding="utf-8") as f:
            logging.config.dictConfig(yaml.safe_load(f))
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def generate(path: str, server_name: str, public_baseurl: str | None = None) -> None:
    if os.path.exists(path):
        raise ConfigError(f"{path}: already exists; not overwriting it")
    text = generate_config_text(server_name, registration_shared_secret=secrets.token_urlsafe(32),
                                public_baseurl=public_baseurl)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    from homeserver.server import load_or_create_signing_key
    load_or_create_signing_key(load_config(path).signing_key_path)


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
            generate(path, args.server_name, args.public_baseurl)
            print(f"Wrote {path} and its signing key. Start the server with: hearth -c {path}")
            return 0
        if not os.path.exists(path):
            if args.config:
                raise ConfigError(f"{path}: no such config file (create one with --generate-config)")
            # First run without a config: generate one for localhost, embedded SQLite.
            generate(path, args.server_name or "localhost")
            print(f"First run: wrote {os.path.abspath(path)} (server_name "
                  f"{args.server_name or 'localhost'}, SQLite, http://127.0.0.1:8008/).")
        config = load_config(path)
        if args.generate_keys:
            from homeserver.server import load_or_create_signing_key
            load_or_create_signing_key(config.signing_key_path)
            return 0
    except ConfigError as e:
        print(f"Configuration error: {e}", file=sys.stderr)
        return 1
    _setup_logging(config)
    return _run(config)


def _run(config: Config) -> int:
    from twisted.internet import defer, reactor

    from homeserver.server import start

    failed: list[BaseException] = []

    async def boot() -> None:
        try:
            await start(config, reactor)
        except Exception as e:
            failed.append(e)
            logging.getLogger("homeserver").error("start-up failed: %s", e)
            reactor.stop()
            return
        if config.pid_file:
            with open(config.pid_file, "w") as f:
                f.write(str(os.getpid()))
        print(f"Hearth is running as {config.server_name}.\n{_first_run_hint(config)}", flush=True)

    reactor.callWhenRunning(lambda: defer.ensureDeferred(boot()))
    reactor.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
