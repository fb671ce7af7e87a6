"""The federation test rig itself: two real Synapses federate through the test CA on IP-literal
server names (so the rig is proven without Hearth's federation), and Hearth starts with its TLS
federation listener serving a certificate the CA vouches for."""

from __future__ import annotations

import ssl
import time
import uuid
from typing import Any, Iterator
from urllib.parse import quote

import pytest

from synapse_compat_tests.federation_fixture import (wait_for,
    FederationCA, SynapseServer, start_synapse, tls_get)
from tests.harness import Client, ServerProcess

pytestmark = pytest.mark.compat




def messages(c: Client, room_id: str) -> list[dict[str, Any]]:
    r = c.get(f"rooms/{room_id}/messages", params={"dir": "b", "limit": 50})
    assert r.status_code == 200, r.text
    return r.json()["chunk"]


def texts(c: Client, room_id: str) -> list[str]:
    return [e["content"].get("body") for e in messages(c, room_id)
            if e["type"] == "m.room.message"]


@pytest.fixture(scope="module")
def synapse2(tmp_path_factory: pytest.TempPathFactory,
             federation_ca: FederationCA) -> Iterator[SynapseServer]:
    srv = start_synapse(str(tmp_path_factory.mktemp("synapse2")), federation_ca, tag="synapse2")
    try:
        yield srv
    finally:
        srv.stop()


def test_ca_certificates_verify_for_ip_and_dns_names(federation_ca: FederationCA) -> None:
    from cryptography import x509
    for name, kind in (("127.0.0.1:8448", x509.IPAddress), ("hs1.test:8448", x509.DNSName)):
        cert_path, _ = federation_ca.issue(name)
        with open(cert_path, "rb") as f:
            leaf, ca = x509.load_pem_x509_certificates(f.read())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v) for v in san.get_values_for_type(kind)] == [name.rsplit(":", 1)[0]]
        leaf.verify_directly_issued_by(federation_ca.certificate)
        assert ca == federation_ca.certificate


def test_synapse_serves_keys_over_tls_and_refuses_other_cas(
        synapse: SynapseServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    status, body = tls_get(synapse.ca, synapse.server_name, "/_matrix/key/v2/server")
    assert status == 200 and body["server_name"] == synapse.server_name
    stranger = FederationCA(str(tmp_path_factory.mktemp("stranger-ca")))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_get(stranger, synapse.server_name, "/_matrix/key/v2/server")
    print(f"\nSynapse start-up (process start to client API + TLS keys answering): "
          f"{synapse.start_seconds:.2f}s")


def test_two_synapses_federate_by_alias(synapse: SynapseServer, synapse2: SynapseServer) -> None:
    a = synapse.register()
    b = synapse2.register()
    alias_local = "fed" + uuid.uuid4().hex[:8]
    r = a.post("createRoom", {"preset": "public_chat", "room_alias_name": alias_local,
                              "name": "rig check"})
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    alias = f"#{alias_local}:{synapse.server_name}"

    # B's server resolves the alias and makes/sends the join over federation (TLS, the test CA).
    t0 = time.monotonic()
    r = b.post(f"join/{quote(alias, safe='')}", {})
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room_id
    join_seconds = time.monotonic() - t0

    # A sees B's join arrive over federation.
    wait_for("B's join at A's server", lambda: any(
        e["type"] == "m.room.member" and e["state_key"] == b.user_id
        and e["content"]["membership"] == "join" for e in messages(a, room_id)))

    r = a.put(f"rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hello B"})
    assert r.status_code == 200, r.text
    wait_for("A's message at B's server (/messages)", lambda: "hello B" in texts(b, room_id))

    # And /sync at B shows the room joined with the message in its timeline at some point.
    def synced() -> bool:
        r = b.get("sync", params={"timeout": 0})
        assert r.status_code == 200, r.text
        room = r.json().get("rooms", {}).get("join", {}).get(room_id)
        return bool(room) and any(e.get("content", {}).get("body") == "hello B"
                                  for e in room["timeline"]["events"])
    wait_for("A's message in B's /sync", synced)

    r = b.put(f"rooms/{room_id}/send/m.room.message/t2", {"msgtype": "m.text", "body": "hi A"})
    assert r.status_code == 200, r.text
    wait_for("B's reply at A's server", lambda: "hi A" in texts(a, room_id))
    print(f"\nremote join by alias took {join_seconds:.2f}s")


def test_hearth_starts_with_tls_federation_listener(hearth_federating: ServerProcess,
                                                    federation_ca: FederationCA) -> None:
    srv = hearth_federating
    name: str = srv.server_name  # type: ignore[attr-defined]
    r = srv.client().get("/_matrix/client/versions")
    assert r.status_code == 200
    try:
        status, body = tls_get(federation_ca, name, "/_matrix/key/v2/server")
    except (ssl.SSLError, OSError) as e:
        pytest.fail(f"Hearth's federation listener {name} does not serve TLS with the CA's "
                    f"certificate: {e!r}\n{srv.log()[-3000:]}", pytrace=False)
    assert status == 200, body
    assert body["server_name"] == name
    # The client listener serves no federation, the TLS one no client API.
    assert srv.client(validate=False).get("/_matrix/key/v2/server").status_code == 404
    status, _ = tls_get(federation_ca, name, "/_matrix/client/versions")
    assert status == 404
