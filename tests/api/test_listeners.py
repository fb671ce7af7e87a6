"""Listeners serve only their configured resources, and trust X-Forwarded-For only if told to."""

from __future__ import annotations

import requests

from tests.harness import free_port


def test_listener_resources_and_forwarded_headers(make_server) -> None:
    port2 = free_port()
    srv = make_server(start=False)
    srv.config["listeners"] = [
        {"port": srv.port, "bind_addresses": ["127.0.0.1"], "type": "http",
         "resources": [{"names": ["client"]}]},
        {"port": port2, "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": True,
         "resources": [{"names": ["client", "health"]}]},
    ]
    srv.start()
    other = f"http://127.0.0.1:{port2}"
    assert requests.get(srv.base_url + "/health").status_code == 404
    r = requests.get(other + "/health")
    assert (r.status_code, r.text) == (200, "OK")

    c = srv.client()
    c.register()
    # The first listener does not trust X-Forwarded-For; the second does.
    c.get("account/whoami", headers={"X-Forwarded-For": "203.0.113.9", "User-Agent": "direct"})
    r = requests.get(other + "/_matrix/client/v3/account/whoami",
                     headers={"Authorization": f"Bearer {c.token}", "User-Agent": "proxied",
                              "X-Forwarded-For": "198.51.100.7, 10.0.0.1"})
    assert r.status_code == 200
    admin = srv.admin()
    who = admin.get(f"/_synapse/admin/v1/whois/{c.user_id}").json()
    conns = {x["user_agent"]: x["ip"] for d in who["devices"].values()
             for s in d["sessions"] for x in s["connections"]}
    assert conns["direct"] == "127.0.0.1"
    assert conns["proxied"] == "198.51.100.7"
