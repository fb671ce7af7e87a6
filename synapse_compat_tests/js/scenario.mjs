// matrix-js-sdk (Rust crypto, as Element Web uses it) against a running homeserver.
//
//   HEARTH_URL=http://127.0.0.1:8008 npm run --silent scenario     (or: npm run scenario -- URL)
//
// Two users exchange megolm-encrypted messages in both directions. Alice then sets up
// cross-signing and secret storage with a fresh recovery key and enables key backup; once her
// room keys are on the server she logs in on a new device which, with the recovery key alone,
// restores the backup, imports her cross-signing keys (signing the new device) and decrypts the
// earlier messages fetched with /messages; last, replacing the cross-signing keys must pass
// user-interactive auth with the password.
//
// stdout carries exactly one line: a JSON object with "ok". All SDK logging goes to stderr.
// Exit status 0 only when every step succeeded; otherwise the JSON names the failed step, the
// error and the last non-2xx HTTP exchanges.
//
// Optional environment: HEARTH_MSG_A / HEARTH_MSG_B (message bodies), HEARTH_JS_LOG (SDK log
// level, default "error"), HEARTH_JS_TIMEOUT_MS (overall limit, default 120000),
// HEARTH_JS_TRACE_HTTP=1 (every HTTP exchange with its bodies to stderr, for debugging).

import { randomBytes } from "node:crypto";

// The SDK and the wasm crypto log through console.*; keep stdout for the result line only.
for (const level of ["log", "info", "debug", "trace", "warn"]) {
    console[level] = (...args) => console.error(...args);
}

const { createClient, ClientEvent, MatrixError, Direction } = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const { decodeRecoveryKey } = await import("matrix-js-sdk/lib/crypto-api/index.js");

logger.setLevel(process.env.HEARTH_JS_LOG || "error", false);

const BASE_URL = (process.argv[2] || process.env.HEARTH_URL || "").replace(/\/+$/, "");
const OVERALL_MS = Number(process.env.HEARTH_JS_TIMEOUT_MS || 120_000);
const nonce = randomBytes(6).toString("hex");
const MSG_A = process.env.HEARTH_MSG_A || `alice says the cellar key is under stone ${nonce}`;
const MSG_B = process.env.HEARTH_MSG_B || `bob answers the gate code is ${nonce.split("").reverse().join("")}`;
const TRACE_HTTP = Boolean(process.env.HEARTH_JS_TRACE_HTTP); // every exchange to stderr, for debugging
const PASSWORD = `pw-${randomBytes(9).toString("hex")}`;

const started = Date.now();
let step = "start";
const info = {};
const httpTrail = []; // the last non-2xx responses, for the failure report
const clients = [];

let finished = false;
function result(obj, code) {
    if (finished) return; // the first outcome stands (a late background error cannot overwrite it)
    finished = true;
    process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
    setTimeout(() => process.exit(code), 2000).unref();
}

function fail(err) {
    for (const c of clients) {
        try { c.stopClient(); } catch { /* shutting down anyway */ }
    }
    result({
        ok: false,
        step,
        error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
        errcode: err?.errcode,
        http_status: err?.httpStatus,
        stack: err instanceof Error ? err.stack?.split("\n").slice(0, 8).join("\n") : undefined,
        elapsed_ms: Date.now() - started,
        http_errors: httpTrail.slice(-25),
        info,
    }, 1);
}

process.on("unhandledRejection", (e) => fail(new Error(`unhandled rejection in step ${step}: ${e?.stack || e}`)));
process.on("uncaughtException", (e) => fail(e));
setTimeout(() => fail(new Error(`overall timeout of ${OVERALL_MS} ms exceeded`)), OVERALL_MS);

// fetch with a per-request timeout that records every non-2xx answer (status, method, path, body).
async function recordingFetch(input, init = {}) {
    const url = input instanceof Request ? input.url : String(input);
    const method = init.method || "GET";
    const signals = [AbortSignal.timeout(45_000)];
    if (init.signal) signals.push(init.signal);
    const resp = await fetch(input, { ...init, signal: AbortSignal.any(signals) });
    if (TRACE_HTTP) {
        const path = new URL(url).pathname;
        let body = "";
        try { body = await resp.clone().text(); } catch { /* ignore */ }
        console.error(`HTTP ${Date.now() - started}ms [${step}] ${method} ${path} ${init.body ?? ""} -> ${resp.status} ${body}`);
    }
    if (!resp.ok) {
        let body = "";
        try { body = (await resp.clone().text()).slice(0, 600); } catch { /* ignore */ }
        const path = new URL(url).pathname + new URL(url).search.replace(/access_token=[^&]*/, "access_token=…");
        httpTrail.push({ step, method, path, status: resp.status, body });
        if (httpTrail.length > 100) httpTrail.shift();
    }
    return resp;
}

async function waitFor(what, fn, timeoutMs = 30_000, intervalMs = 100) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            const v = await fn();
            if (v) return v;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` + (last ? ` (last error: ${last.message})` : ""));
        }
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

function check(cond, message) {
    if (!cond) throw new Error(`assertion failed: ${message}`);
}

// An authenticated raw request, for looking at what the server holds.
async function api(token, method, path, body) {
    const resp = await recordingFetch(`${BASE_URL}/_matrix/client/v3${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`${method} ${path} -> HTTP ${resp.status}: ${text.slice(0, 400)}`);
    return JSON.parse(text);
}

async function register(localpart) {
    const anon = createClient({ baseUrl: BASE_URL, fetchFn: recordingFetch, localTimeoutMs: 30_000 });
    const req = { username: localpart, password: PASSWORD, initial_device_display_name: `${localpart} first device` };
    let session;
    try {
        // The first request has no auth: a 401 carries the session and the flows (spec: UIA).
        return await anon.registerRequest(req);
    } catch (e) {
        if (!(e instanceof MatrixError) || e.httpStatus !== 401) throw e;
        const flows = e.data?.flows || [];
        check(flows.some((f) => (f.stages || []).length === 1 && f.stages[0] === "m.login.dummy"),
            `registration offers a m.login.dummy-only flow: ${JSON.stringify(e.data)}`);
        session = e.data.session;
    }
    return await anon.registerRequest({ ...req, auth: { type: "m.login.dummy", session } });
}

async function login(userId) {
    const anon = createClient({ baseUrl: BASE_URL, fetchFn: recordingFetch, localTimeoutMs: 30_000 });
    return await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: userId },
        password: PASSWORD,
        initial_device_display_name: "alice new device",
    });
}

// A started client with in-memory Rust crypto; cryptoCallbacks only matter for Alice.
async function startedClient(creds, cryptoCallbacks = {}) {
    const client = createClient({
        baseUrl: BASE_URL,
        userId: creds.user_id,
        deviceId: creds.device_id,
        accessToken: creds.access_token,
        fetchFn: recordingFetch,
        localTimeoutMs: 60_000,
        cryptoCallbacks,
    });
    clients.push(client);
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") {
                client.off(ClientEvent.Sync, onSync);
                resolve();
            } else if (state === "ERROR") {
                client.off(ClientEvent.Sync, onSync);
                reject(new Error(`initial /sync failed for ${creds.user_id}: ${data?.error?.message || "unknown"}`));
            }
        };
        client.on(ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 50, lazyLoadMembers: false });
    await Promise.race([prepared, new Promise((_, rej) => setTimeout(() => rej(new Error("initial sync took over 30 s")), 30_000))]);
    return client;
}

function describeEvent(ev) {
    return {
        event_id: ev.getId(),
        wire_type: ev.getWireType(),
        type: ev.getType(),
        decryption_failure: ev.isDecryptionFailure(),
        failure_reason: ev.decryptionFailureReason,
        body: ev.getContent()?.body,
    };
}

// The timeline event whose decrypted body is `body`, once the client has decrypted it.
async function decryptedInTimeline(client, roomId, body, who) {
    let seen = [];
    try {
        return await waitFor(`${who} to decrypt "${body}"`, () => {
            const room = client.getRoom(roomId);
            if (!room) return null;
            const evs = room.getLiveTimeline().getEvents().filter((e) => e.getWireType() === "m.room.encrypted");
            seen = evs.map(describeEvent);
            return evs.find((e) => !e.isBeingDecrypted() && e.getType() === "m.room.message" && e.getContent().body === body);
        }, 30_000);
    } catch (e) {
        info[`${who}_timeline`] = seen;
        throw e;
    }
}

async function main() {
    check(BASE_URL.startsWith("http"), "homeserver URL given as HEARTH_URL or first argument");
    info.node = process.version;

    step = "register";
    const suffix = randomBytes(4).toString("hex");
    const aliceCreds = await register(`alice${suffix}`);
    const bobCreds = await register(`bob${suffix}`);
    const alice = aliceCreds.user_id;
    const bob = bobCreds.user_id;
    info.alice = alice;
    info.bob = bob;

    step = "start clients";
    // Filled in when the recovery key exists; the SDK keeps a reference to this very object.
    const aliceCallbacks = {};
    const a1 = await startedClient(aliceCreds, aliceCallbacks);
    const b = await startedClient(bobCreds);

    step = "device keys published";
    for (const [client, userId, deviceId] of [[a1, bob, bobCreds.device_id], [b, alice, aliceCreds.device_id]]) {
        await waitFor(`${deviceId} in /keys/query for ${userId}`, async () => {
            const map = await client.getCrypto().getUserDeviceInfo([userId], true);
            return map.get(userId)?.has(deviceId);
        }, 20_000, 250);
    }

    step = "create encrypted room";
    const { room_id: roomId } = await a1.createRoom({
        preset: "private_chat",
        name: "secret cellar",
        invite: [bob],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    info.room_id = roomId;

    step = "bob joins";
    await waitFor("bob's invite via /sync", () => b.getRoom(roomId)?.getMyMembership() === "invite", 20_000);
    await b.joinRoom(roomId);
    await waitFor("both see the room as encrypted with bob joined", async () =>
        (await a1.getCrypto().isEncryptionEnabledInRoom(roomId))
        && (await b.getCrypto().isEncryptionEnabledInRoom(roomId))
        && a1.getRoom(roomId)?.getMember(bob)?.membership === "join", 20_000);

    step = "alice -> bob encrypted";
    const sentA = await a1.sendMessage(roomId, { msgtype: "m.text", body: MSG_A });
    const evA = await decryptedInTimeline(b, roomId, MSG_A, "bob");
    check(evA.getId() === sentA.event_id, `bob decrypted the event alice sent (${evA.getId()} vs ${sentA.event_id})`);
    check(evA.getSender() === alice, "sender of the first message is alice");
    info.event_a = { event_id: sentA.event_id, ciphertext: evA.getWireContent().ciphertext, session_id: evA.getWireContent().session_id };

    step = "bob -> alice encrypted";
    const sentB = await b.sendMessage(roomId, { msgtype: "m.text", body: MSG_B });
    const evB = await decryptedInTimeline(a1, roomId, MSG_B, "alice");
    check(evB.getId() === sentB.event_id, "alice decrypted the event bob sent");
    info.event_b = { event_id: sentB.event_id, ciphertext: evB.getWireContent().ciphertext, session_id: evB.getWireContent().session_id };

    step = "cross-signing";
    const crypto1 = a1.getCrypto();
    let uia = "not asked";
    await crypto1.bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                // Spec (v1.11+): the first upload of cross-signing keys needs no UIA.
                await makeRequest(null);
                uia = "not required";
            } catch (e) {
                if (!(e instanceof MatrixError) || e.httpStatus !== 401 || !e.data?.session) throw e;
                uia = "m.login.password";
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: alice },
                    password: PASSWORD,
                    session: e.data.session,
                });
            }
        },
    });
    info.cross_signing_uia = uia;
    check(await crypto1.isCrossSigningReady(), "alice's first device reports cross-signing ready");
    const keysOnServer = await api(aliceCreds.access_token, "POST", "/keys/query", { device_keys: { [alice]: [] } });
    check(keysOnServer.master_keys?.[alice] && keysOnServer.self_signing_keys?.[alice] && keysOnServer.user_signing_keys?.[alice],
        `/keys/query returns alice's master, self-signing and user-signing keys to herself: ${JSON.stringify(Object.keys(keysOnServer))}`);

    step = "secret storage and key backup";
    const recovery = await crypto1.createRecoveryKeyFromPassphrase();
    check(typeof recovery.encodedPrivateKey === "string", "a recovery key was generated");
    let cachedKey = null;
    aliceCallbacks.getSecretStorageKey = async ({ keys }) => {
        const id = Object.keys(keys).find((k) => cachedKey && k === cachedKey[0]);
        return id ? cachedKey : null;
    };
    aliceCallbacks.cacheSecretStorageKey = (keyId, _info, key) => { cachedKey = [keyId, key]; };
    await crypto1.bootstrapSecretStorage({
        createSecretStorageKey: async () => recovery,
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
    });
    check(await crypto1.isSecretStorageReady(), "alice's secret storage is ready");
    const backupVersion = await waitFor("an active key backup version", () => crypto1.getActiveSessionBackupVersion(), 20_000);
    info.backup_version = backupVersion;
    const backupKey = await crypto1.getSessionBackupPrivateKey();
    check(backupKey, "alice's device holds the backup decryption key");
    info.backup_private_key_b64 = Buffer.from(backupKey).toString("base64").replace(/=+$/, "");
    const defaultKey = await a1.getAccountDataFromServer("m.secret_storage.default_key");
    check(defaultKey?.key, "m.secret_storage.default_key account data is on the server");
    info.secret_storage_key_id = defaultKey.key;

    step = "room keys uploaded to backup";
    // The Rust SDK starts uploading after a random delay of up to 10 s.
    const sessionIds = [info.event_a.session_id, info.event_b.session_id];
    const uploaded = await waitFor("both megolm sessions in /room_keys/keys", async () => {
        const all = await api(aliceCreds.access_token, "GET", `/room_keys/keys?version=${encodeURIComponent(backupVersion)}`);
        const sessions = all.rooms?.[roomId]?.sessions || {};
        return sessionIds.every((s) => s in sessions) ? sessions : null;
    }, 40_000, 500);
    for (const s of sessionIds) {
        check(uploaded[s].session_data?.ciphertext && uploaded[s].session_data?.ephemeral && uploaded[s].session_data?.mac,
            `backed-up session ${s} is an encrypted blob: ${JSON.stringify(uploaded[s]).slice(0, 200)}`);
    }
    info.backup_session_count = Object.keys(uploaded).length;

    step = "new device logs in";
    const a2Creds = await login(alice);
    check(a2Creds.device_id && a2Creds.device_id !== aliceCreds.device_id, "login made a new device");
    info.new_device = a2Creds.device_id;
    const recoveryBytes = decodeRecoveryKey(recovery.encodedPrivateKey);
    let keyRequests = 0;
    const a2 = await startedClient(a2Creds, {
        // Only the recovery key: whichever secret storage key the SDK asks for, answer the default one.
        getSecretStorageKey: async ({ keys }) => {
            keyRequests += 1;
            return info.secret_storage_key_id in keys ? [info.secret_storage_key_id, recoveryBytes] : null;
        },
    });
    const crypto2 = a2.getCrypto();

    step = "new device cannot decrypt before restoring";
    const room2 = await waitFor("the room on the new device", () => a2.getRoom(roomId), 20_000);
    check(room2.getMyMembership() === "join", "alice's new device sees her joined");
    const utds = await waitFor("both messages in the new device's synced timeline, undecryptable", () => {
        const evs = room2.getLiveTimeline().getEvents()
            .filter((e) => [sentA.event_id, sentB.event_id].includes(e.getId()) && !e.isBeingDecrypted());
        return evs.length === 2 ? evs : null;
    }, 20_000);
    for (const ev of utds) {
        check(ev.isDecryptionFailure(), `before the restore the new device cannot read ${ev.getId()}: ${JSON.stringify(describeEvent(ev))}`);
    }

    step = "restore backup with the recovery key";
    await crypto2.loadSessionBackupPrivateKeyFromSecretStorage();
    const restored = await crypto2.restoreKeyBackup();
    info.restore = { total: restored.total, imported: restored.imported, secret_storage_key_requests: keyRequests };
    check(restored.imported >= 2, `restored at least the two room keys (${JSON.stringify(restored)})`);

    step = "decrypt history from /messages";
    const page = await a2.createMessagesRequest(roomId, null, 50, Direction.Backward);
    const mapper = a2.getEventMapper();
    const fetched = page.chunk.map((raw) => mapper(raw));
    const bodies = {};
    for (const want of [[sentA.event_id, MSG_A], [sentB.event_id, MSG_B]]) {
        const ev = fetched.find((e) => e.getId() === want[0]);
        check(ev, `/messages returns event ${want[0]}`);
        check(ev.getWireType() === "m.room.encrypted", `${want[0]} is served encrypted (${ev.getWireType()})`);
        await a2.decryptEventIfNeeded(ev);
        await waitFor(`decryption of ${want[0]}`, () => !ev.isBeingDecrypted(), 10_000, 50);
        if (ev.isDecryptionFailure()) await ev.attemptDecryption(crypto2, { isRetry: true });
        check(!ev.isDecryptionFailure(), `new device decrypts ${want[0]}: ${JSON.stringify(describeEvent(ev))}`);
        check(ev.getContent().body === want[1], `decrypted body of ${want[0]} is the original text: ${JSON.stringify(ev.getContent())}`);
        bodies[want[0]] = ev.getContent().body;
    }
    info.restored_bodies = bodies;

    step = "new device decrypts its synced timeline";
    await decryptedInTimeline(a2, roomId, MSG_A, "alice_new_device");
    await decryptedInTimeline(a2, roomId, MSG_B, "alice_new_device");

    step = "new device imports cross-signing from secret storage";
    // As Element does before "verify with recovery key": make sure the device knows the public
    // cross-signing keys (a /keys/query of our own user), else importing the private ones fails.
    check(await crypto2.userHasCrossSigningKeys(alice, true), "the new device finds alice's cross-signing keys via /keys/query");
    await crypto2.bootstrapCrossSigning({});
    const status2 = await crypto2.getCrossSigningStatus();
    check(status2.privateKeysCachedLocally.masterKey && status2.privateKeysCachedLocally.selfSigningKey,
        `the new device holds the private cross-signing keys: ${JSON.stringify(status2)}`);
    await waitFor("the old device to see the new one cross-signed", async () => {
        const s = await crypto1.getDeviceVerificationStatus(alice, a2Creds.device_id);
        return s?.crossSigningVerified;
    }, 20_000, 250);

    step = "replacing the cross-signing keys needs the password (UIA)";
    const masterBefore = Object.values(keysOnServer.master_keys[alice].keys)[0];
    let resetUia = "not asked";
    await crypto2.bootstrapCrossSigning({
        setupNewCrossSigning: true,
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
                resetUia = "not required";
            } catch (e) {
                if (!(e instanceof MatrixError) || e.httpStatus !== 401 || !e.data?.session) throw e;
                check((e.data.flows || []).some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.password"),
                    `UIA offers m.login.password: ${JSON.stringify(e.data)}`);
                resetUia = "m.login.password";
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: alice },
                    password: PASSWORD,
                    session: e.data.session,
                });
            }
        },
    });
    info.reset_cross_signing_uia = resetUia;
    check(resetUia === "m.login.password",
        "spec: replacing an existing master key via /keys/device_signing/upload requires user-interactive auth");
    const keysAfter = await api(a2Creds.access_token, "POST", "/keys/query", { device_keys: { [alice]: [] } });
    const masterAfter = Object.values(keysAfter.master_keys?.[alice]?.keys || {})[0];
    check(masterAfter && masterAfter !== masterBefore, "/keys/query serves the new master key after the reset");
    // The device trusts its new identity once /sync's device_lists.changed has made it re-query
    // its own keys.
    await waitFor("the new device to be cross-signing ready with the new keys", () => crypto2.isCrossSigningReady(), 15_000, 200);

    info.elapsed_ms = Date.now() - started;
    for (const c of clients) c.stopClient();
    result({ ok: true, messages: [MSG_A, MSG_B], recovery_key: recovery.encodedPrivateKey, ...info, http_errors: httpTrail }, 0);
}

main().catch(fail);
