"""Server ACLs (m.room.server_acl): glob matching on host names, deny before allow, IP literals."""

from federation.acl import server_allowed


def test_allow_and_deny_globs() -> None:
    acl = {"allow": ["*"], "deny": ["evil.example", "*.bad.example"]}
    assert server_allowed("good.example", acl)
    assert server_allowed("good.example:8448", acl)  # the port is not part of the match
    assert not server_allowed("evil.example", acl)
    assert not server_allowed("a.bad.example:443", acl)
    assert server_allowed("bad.example", acl)  # "*.bad.example" needs a subdomain


def test_nothing_allowed_unless_listed() -> None:
    assert not server_allowed("x.example", {})
    assert not server_allowed("x.example", {"allow": []})
    assert server_allowed("x.example", {"allow": ["x.exampl?"]})
    assert not server_allowed("x.example.org", {"allow": ["x.exampl?"]})


def test_ip_literals() -> None:
    acl = {"allow": ["*"], "allow_ip_literals": False}
    assert not server_allowed("127.0.0.1:8448", acl)
    assert not server_allowed("[::1]:8448", acl)
    assert server_allowed("matrix.example", acl)
    assert server_allowed("127.0.0.1:8448", {"allow": ["*"]})


def test_malformed_content_denies_safely() -> None:
    assert not server_allowed("x.example", {"allow": "*"})
    assert server_allowed("x.example", {"allow": ["*"], "deny": "x.example"})
    assert not server_allowed("x.example", {"allow": [1, None]})
