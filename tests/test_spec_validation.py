"""Tests for tests/spec_validation.py, the Matrix-spec response/request validator.

Each positive case is paired with a negative one, so a validator that
silently accepts everything (or rejects everything) fails this suite.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import spec_validation as sv  # noqa: E402

CS = "/_matrix/client/v3"


def assert_invalid(fn, *args, match: str | None = None, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    if match is not None:
        assert match in message, message
    return message


# --------------------------------------------------------------------------
# locating the spec
# --------------------------------------------------------------------------


def test_spec_dir_default_location_or_env():
    root = sv.spec_dir()
    assert (root / "api" / "client-server" / "versions.yaml").is_file()
    assert (root / "event-schemas" / "schema").is_dir()


def test_spec_dir_missing_is_a_clear_error_not_a_skip(monkeypatch, tmp_path):
    monkeypatch.setenv("MATRIX_SPEC_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MATRIX_SPEC_DIR"):
        sv.spec_dir()
    with pytest.raises(FileNotFoundError, match="Matrix spec not found"):
        sv.validate_response("GET", "/_matrix/client/versions", 200, {"versions": []})


def test_spec_dir_env_override_is_used(monkeypatch, tmp_path):
    (tmp_path / "api" / "client-server").mkdir(parents=True)
    monkeypatch.setenv("MATRIX_SPEC_DIR", str(tmp_path))
    assert sv.spec_dir() == tmp_path.resolve()


# --------------------------------------------------------------------------
# /versions (basePath /_matrix/client, no version segment)
# --------------------------------------------------------------------------


def test_versions_valid_body_passes():
    sv.validate_response(
        "GET",
        "/_matrix/client/versions",
        200,
        {"versions": ["v1.1", "v1.11"], "unstable_features": {"org.example.feature": True}},
    )


@pytest.mark.parametrize(
    "body, where",
    [
        ({"versions": "v1.1"}, "$.versions"),  # not an array
        ({"versions": ["v1.1", 11]}, "$.versions[1]"),  # item not a string
        ({"unstable_features": {}}, "'versions' is a required property"),
        ({"versions": [], "unstable_features": {"org.example": "yes"}}, "unstable_features"),
        ([], "not of type 'object'"),
    ],
)
def test_versions_wrong_body_fails(body, where):
    message = assert_invalid(sv.validate_response, "GET", "/_matrix/client/versions", 200, body)
    assert where in message
    assert "versions.yaml" in message


def test_additional_properties_follow_the_schema():
    # The /versions schema doesn't forbid extra keys, so neither do we...
    sv.validate_response("GET", "/_matrix/client/versions", 200, {"versions": [], "x.custom": 1})
    # ...but where the schema constrains additionalProperties, it's enforced.
    assert_invalid(
        sv.validate_response,
        "GET",
        "/_matrix/client/versions",
        200,
        {"versions": [], "unstable_features": {"x.custom": 1}},
        match="unstable_features",
    )


# --------------------------------------------------------------------------
# /register/available
# --------------------------------------------------------------------------


def test_register_available_true_passes():
    sv.validate_response("GET", f"{CS}/register/available?username=alice", 200, {"available": True})


def test_register_available_string_fails():
    message = assert_invalid(
        sv.validate_response, "GET", f"{CS}/register/available", 200, {"available": "yes"}
    )
    assert "$.available" in message and "boolean" in message


def test_register_available_documented_error_status():
    sv.validate_response(
        "GET", f"{CS}/register/available", 400, {"errcode": "M_USER_IN_USE", "error": "taken"}
    )
    assert_invalid(
        sv.validate_response, "GET", f"{CS}/register/available", 400, {"error": "no errcode"},
        match="errcode",
    )
    # 429 points at definitions/errors/rate_limited.yaml, which allOf's error.yaml
    sv.validate_response(
        "GET", f"{CS}/register/available", 429,
        {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 100},
    )
    assert_invalid(
        sv.validate_response, "GET", f"{CS}/register/available", 429,
        {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": "soon"},
        match="retry_after_ms",
    )


# --------------------------------------------------------------------------
# path templates and methods
# --------------------------------------------------------------------------


def test_path_parameter_is_matched():
    op = sv.find_operation("GET", f"{CS}/devices/ABC")
    assert op.template == f"{CS}/devices/{{deviceId}}"
    assert op.file.name == "device_management.yaml"
    assert dict(op.path_params) == {"deviceId": "ABC"}
    # PUT on the same path is a different operation (with a request body)
    assert sv.find_operation("PUT", f"{CS}/devices/ABC").operation["operationId"] == "updateDevice"


def test_device_response_is_validated_through_the_matched_template():
    device = {"device_id": "ABC", "display_name": "phone", "last_seen_ip": "1.2.3.4", "last_seen_ts": 1}
    sv.validate_response("GET", f"{CS}/devices/ABC", 200, device)
    sv.validate_response("GET", f"{CS}/devices/ABC", 200, {"device_id": "ABC"})
    assert_invalid(sv.validate_response, "GET", f"{CS}/devices/ABC", 200, {"display_name": "phone"},
                   match="'device_id' is a required property")
    assert_invalid(sv.validate_response, "GET", f"{CS}/devices/ABC", 200,
                   {"device_id": "ABC", "last_seen_ts": "yesterday"}, match="$.last_seen_ts")


def test_most_specific_template_and_encoded_or_empty_segments():
    # Same template is split over rooms.yaml (GET) and room_state.yaml (PUT).
    get = sv.find_operation("GET", f"{CS}/rooms/%21r%3Aexample.org/state/m.room.name/")
    put = sv.find_operation("PUT", f"{CS}/rooms/!r:example.org/state/m.room.name/")
    assert get.file.name == "rooms.yaml" and put.file.name == "room_state.yaml"
    assert dict(get.path_params) == {"roomId": "!r:example.org", "eventType": "m.room.name", "stateKey": ""}
    assert sv.find_operation("GET", f"{CS}/rooms/!r:x/state").template == f"{CS}/rooms/{{roomId}}/state"
    # literal segments beat parameters
    assert sv.find_operation("GET", f"{CS}/pushrules/global/").template == f"{CS}/pushrules/global/"
    # full URLs are accepted
    assert sv.find_operation("GET", "https://hs.example/_matrix/client/versions").file.name == "versions.yaml"


def test_base_paths_per_file():
    # v1 endpoints (relations.yaml has basePath /_matrix/client/v1)
    assert sv.find_operation("GET", "/_matrix/client/v1/rooms/!r:x/relations/$e").file.name == "relations.yaml"
    assert_invalid(sv.find_operation, "GET", f"{CS}/rooms/!r:x/relations/$e", match="no path")
    # content-repo.yaml has basePath /_matrix and paths /media/v3/...
    assert sv.find_operation("GET", "/_matrix/media/v3/config").file.name == "content-repo.yaml"
    # well-known
    assert sv.find_operation("GET", "/.well-known/matrix/client").file.name == "wellknown.yaml"
    # other APIs
    assert sv.find_operation("GET", "/_matrix/federation/v1/version", api="server-server").file.name == "version.yaml"


def test_server_variables_are_expanded():
    servers = [
        {
            "url": "{protocol}://{hostname}{basePath}",
            "variables": {
                "protocol": {"enum": ["http", "https"], "default": "https"},
                "hostname": {"default": "localhost:8008"},
                "basePath": {"enum": ["/_matrix/client/r0", "/_matrix/client/v3"], "default": "/_matrix/client/v3"},
            },
        },
        {"url": "/_matrix/client/unstable"},
    ]
    assert sv._server_base_paths(servers) == ["/_matrix/client/r0", "/_matrix/client/v3", "/_matrix/client/unstable"]
    assert sv._server_base_paths(None) == [""]


def test_unknown_path_and_method_raise():
    assert_invalid(sv.validate_response, "GET", f"{CS}/no_such_endpoint", 200, {}, match="no path")
    assert_invalid(sv.validate_response, "GET", "/_matrix/client/r0/versions", 200, {"versions": []},
                   match="/_matrix/client/versions")  # suggested as a close match
    assert_invalid(sv.validate_response, "PATCH", f"{CS}/devices/ABC", 200, {}, match="documented methods")


def test_undocumented_status_raises():
    message = assert_invalid(sv.validate_response, "GET", "/_matrix/client/versions", 418, {"versions": []})
    assert "418" in message and "/_matrix/client/versions" in message
    message = assert_invalid(sv.validate_response, "GET", f"{CS}/devices/ABC", 500, {"errcode": "M_UNKNOWN", "error": "x"})
    assert "500" in message and f"{CS}/devices/ABC" in message


def test_error_status_without_documented_body_uses_standard_error_shape():
    # device_management.yaml documents 404 without any content
    sv.validate_response("GET", f"{CS}/devices/ABC", 404, {"errcode": "M_NOT_FOUND", "error": "no device"})
    assert_invalid(sv.validate_response, "GET", f"{CS}/devices/ABC", 404, {"errcode": 404}, match="errcode")


def test_endpoint_documented_twice_accepts_either_definition():
    # old_sync.yaml has "/events", peeking_events.yaml has "/events " (sic)
    ops = sv.find_operations("GET", f"{CS}/events")
    assert sorted(op.file.name for op in ops) == ["old_sync.yaml", "peeking_events.yaml"]
    sv.validate_response("GET", f"{CS}/events?room_id=!r:x", 200, {"chunk": [], "start": "a", "end": "b"})
    assert_invalid(sv.validate_response, "GET", f"{CS}/events", 200, {"chunk": {}}, match="peeking_events.yaml")


# --------------------------------------------------------------------------
# $ref resolution
# --------------------------------------------------------------------------


LOGIN_OK = {
    "user_id": "@alice:example.org",
    "access_token": "tok",
    "device_id": "DEV",
    "well_known": {"m.homeserver": {"base_url": "https://example.org"}},
}


def test_login_response_resolves_definitions_refs():
    sv.validate_response("POST", f"{CS}/login", 200, LOGIN_OK)
    # well_known -> definitions/wellknown/full.yaml -> homeserver.yaml
    bad = copy.deepcopy(LOGIN_OK)
    bad["well_known"]["m.homeserver"]["base_url"] = 5
    assert_invalid(sv.validate_response, "POST", f"{CS}/login", 200, bad,
                   match="$.well_known['m.homeserver'].base_url")
    bad = copy.deepcopy(LOGIN_OK)
    bad["well_known"] = {"m.identity_server": {"base_url": "https://id.example.org"}}
    assert_invalid(sv.validate_response, "POST", f"{CS}/login", 200, bad, match="'m.homeserver' is a required")


def test_capabilities_resolves_in_file_component_refs():
    ok = {
        "capabilities": {
            "m.change_password": {"enabled": False},
            "m.room_versions": {"default": "10", "available": {"10": "stable", "11": "stable"}},
            "org.example.custom": {"anything": 1},
        }
    }
    sv.validate_response("GET", f"{CS}/capabilities", 200, ok)
    bad = copy.deepcopy(ok)
    bad["capabilities"]["m.change_password"] = {"enabled": "no"}  # '#/components/schemas/booleanCapability'
    assert_invalid(sv.validate_response, "GET", f"{CS}/capabilities", 200, bad, match="m.change_password")
    bad = copy.deepcopy(ok)
    bad["capabilities"]["m.room_versions"]["available"]["10"] = "beta"
    assert_invalid(sv.validate_response, "GET", f"{CS}/capabilities", 200, bad, match="'beta' is not one of")


def test_refs_into_event_schemas_are_resolved():
    # children_state items -> ../../event-schemas/schema/core-event-schema/stripped_state.yaml
    child = {
        "type": "m.space.child",
        "state_key": "!a:example.org",
        "content": {"via": ["example.org"]},
        "sender": "@alice:example.org",
        "origin_server_ts": 1629413349153,
    }
    room = {"room_id": "!space:example.org", "num_joined_members": 1, "world_readable": False,
            "guest_can_join": False, "children_state": [child]}
    path = "/_matrix/client/v1/rooms/!space:example.org/hierarchy"
    sv.validate_response("GET", path, 200, {"rooms": [room]})
    bad = copy.deepcopy(room)
    del bad["children_state"][0]["sender"]
    assert_invalid(sv.validate_response, "GET", path, 200, {"rooms": [bad]}, match="'sender' is a required property")
    # GET /rooms/{roomId}/state/... with format=event -> state_event.yaml (oneOf with a plain object)
    sv.validate_response("GET", f"{CS}/rooms/!r:x/state/m.room.name/", 200, {"name": "Room"})


def test_room_state_items_resolve_client_event_chain():
    # items -> definitions/client_event.yaml -> client_event_without_room_id.yaml
    event = {"event_id": "$e", "type": "m.room.name", "sender": "@a:x", "origin_server_ts": 1,
             "content": {"name": "n"}, "state_key": "", "room_id": "!r:x"}
    sv.validate_response("GET", f"{CS}/rooms/!r:x/state", 200, [event])
    bad = dict(event)
    del bad["origin_server_ts"]
    assert_invalid(sv.validate_response, "GET", f"{CS}/rooms/!r:x/state", 200, [event, bad],
                   match="$[1]")


def test_every_client_server_file_loads_and_every_ref_resolves():
    count, problems = sv.check_refs("client-server")
    assert problems == [], "\n".join(problems)
    # ~600 refs today; a collapse here means the walker stopped finding them
    assert count > 400, count


def test_check_refs_reports_broken_refs(monkeypatch, tmp_path):
    api = tmp_path / "api" / "client-server"
    (api / "definitions").mkdir(parents=True)
    (api / "definitions" / "ok.yaml").write_text("type: object\n")
    (api / "x.yaml").write_text(
        "openapi: 3.1.0\n"
        "paths: {}\n"
        "components:\n"
        "  schemas:\n"
        "    good: {$ref: definitions/ok.yaml}\n"
        "    missing_file: {$ref: definitions/missing.yaml}\n"
        "    missing_pointer: {$ref: '#/components/schemas/nope'}\n"
    )
    monkeypatch.setenv("MATRIX_SPEC_DIR", str(tmp_path))
    count, problems = sv.check_refs("client-server")
    assert count == 3
    assert len(problems) == 2, problems
    assert any("missing.yaml" in p for p in problems)
    assert any("#/components/schemas/nope" in p for p in problems)


def test_spec_examples_validate_against_their_own_schemas():
    """No added strictness: every JSON example in the client-server spec
    (except those stitched together with $ref) passes the validator."""
    checked, failures = 0, []
    for route in sv._routes(str(sv.spec_dir()), "client-server"):
        for method, definitions in route.methods.items():
            for _file, op_loc, dialect in definitions:
                targets = []
                if "responses" in op_loc.value:
                    responses = sv._deref(op_loc.child("responses"))
                    targets += [sv._deref(responses.child(k)) for k in responses.value]
                if "requestBody" in op_loc.value:
                    targets.append(sv._deref(op_loc.child("requestBody")))
                for target in targets:
                    media = sv._json_media(target.value.get("content") or {})
                    if media is None:
                        continue
                    media_loc = sv._deref(target.child("content", media))
                    if "schema" not in media_loc.value:
                        continue
                    for name in media_loc.value.get("examples") or {}:
                        example = sv._deref(media_loc.child("examples", name)).value
                        if "value" not in example or "$ref" in repr(example["value"]):
                            continue
                        checked += 1
                        try:
                            sv._validate_schema(media_loc.child("schema"), dialect, example["value"],
                                                f"{method.upper()} {route.template} example {name!r}")
                        except AssertionError as exc:
                            failures.append(str(exc))
    assert failures == [], "\n\n".join(failures)
    assert checked > 150, checked


# --------------------------------------------------------------------------
# request bodies
# --------------------------------------------------------------------------


def test_validate_request_body():
    login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"}
    sv.validate_request_body("POST", f"{CS}/login", login)
    assert_invalid(sv.validate_request_body, "POST", f"{CS}/login", {"password": "pw"}, match="'type' is a required")
    assert_invalid(sv.validate_request_body, "POST", f"{CS}/login", {**login, "identifier": {"user": "alice"}},
                   match="$.identifier")  # definitions/user_identifier.yaml requires type
    assert_invalid(sv.validate_request_body, "POST", f"{CS}/login", None, match="required")
    sv.validate_request_body("PUT", f"{CS}/devices/ABC", {"display_name": "phone"})
    assert_invalid(sv.validate_request_body, "PUT", f"{CS}/devices/ABC", {"display_name": 5}, match="$.display_name")
    # GET /devices/{id} documents no body
    sv.validate_request_body("GET", f"{CS}/devices/ABC", None)
    assert_invalid(sv.validate_request_body, "GET", f"{CS}/devices/ABC", {"x": 1}, match="no request body")


# --------------------------------------------------------------------------
# standard errors
# --------------------------------------------------------------------------


def test_validate_error_accepts_standard_errors():
    sv.validate_error(404, {"errcode": "M_NOT_FOUND", "error": "Not found"})
    sv.validate_error(403, {"errcode": "M_FORBIDDEN", "error": "No", "extra": {"allowed": True}})
    sv.validate_error(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Slow down", "retry_after_ms": 500})


@pytest.mark.parametrize(
    "status, body, match",
    [
        (404, {"error": "Not found"}, "errcode"),
        (404, {"errcode": "M_NOT_FOUND"}, "'error'"),
        (404, {"errcode": 404, "error": "x"}, "$.errcode"),
        (400, {"errcode": "M_BAD_JSON", "error": None}, "$.error"),
        (400, "M_BAD_JSON", "not of type 'object'"),
        (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "x", "retry_after_ms": "1s"}, "retry_after_ms"),
        (200, {"errcode": "M_UNKNOWN", "error": "x"}, "4xx/5xx"),
    ],
)
def test_validate_error_rejects_malformed_errors(status, body, match):
    assert_invalid(sv.validate_error, status, body, match=match)


def test_literal_segments_beat_parameters(monkeypatch, tmp_path):
    # The real spec has no overlapping templates today, so use a tiny fake one.
    api = tmp_path / "api" / "client-server"
    api.mkdir(parents=True)
    (api / "things.yaml").write_text(
        "openapi: 3.1.0\n"
        "servers:\n"
        "  - url: '{protocol}://{hostname}{basePath}'\n"
        "    variables:\n"
        "      protocol: {default: https}\n"
        "      hostname: {default: localhost}\n"
        "      basePath: {default: /_matrix/client/v3}\n"
        "paths:\n"
        "  /things/{thingId}/{field}:\n"
        "    get: {operationId: generic, responses: {'200': {description: ok}}}\n"
        "  /things/{thingId}/special:\n"
        "    get: {operationId: special, responses: {'200': {description: ok}}}\n"
        "  /things/mine/{field}:\n"
        "    get: {operationId: mine, responses: {'200': {description: ok}}}\n"
    )
    monkeypatch.setenv("MATRIX_SPEC_DIR", str(tmp_path))
    assert sv.find_operation("GET", f"{CS}/things/a/b").operation["operationId"] == "generic"
    assert sv.find_operation("GET", f"{CS}/things/a/special").operation["operationId"] == "special"
    assert sv.find_operation("GET", f"{CS}/things/mine/b").operation["operationId"] == "mine"
    # leftmost literal wins on ties
    assert sv.find_operation("GET", f"{CS}/things/mine/special").operation["operationId"] == "mine"


def test_invite_documented_twice_request_bodies():
    # inviting.yaml has "/rooms/{roomId}/invite " (sic, trailing space) for
    # user-ID invites; third_party_membership.yaml has the 3PID variant.
    path = f"{CS}/rooms/!r:example.org/invite"
    sv.validate_request_body("POST", path, {"user_id": "@bob:example.org", "reason": "hi"})
    sv.validate_request_body(
        "POST", path,
        {"id_server": "id.example.org", "id_access_token": "t", "medium": "email", "address": "b@example.org"},
    )
    message = assert_invalid(sv.validate_request_body, "POST", path, {"reason": "hi"})
    assert "inviting.yaml" in message and "third_party_membership.yaml" in message
    assert_invalid(sv.validate_request_body, "POST", path, {"user_id": 5}, match="$.user_id")
