"""matrix-nio's AsyncClient against Hearth: registration, login, devices, profile, logout.

Each test is a plain function that runs one asyncio scenario; nio is asyncio-based, the server
is a separate Twisted process, so the two event loops never meet. Every assertion is on what a
nio user sees: the response class nio chose, and the fields it parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, TypeVar

import nio
import pytest
from nio.responses import RegisterErrorResponse  # not re-exported by the nio package

from tests.harness import ServerProcess

pytestmark = pytest.mark.compat

SERVER_NAME = "test.local"
PASSWORD = "correct horse battery staple"

# Fail fast instead of nio's defaults (retry forever on timeouts and 429s): a dead or
# rate-limiting server shows up as an exception or an ErrorResponse, not a hung test.
CONFIG = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30)

R = TypeVar("R")


def mxid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


def expect(resp: object, cls: type[R]) -> R:
    """The response is of nio class ``cls``; otherwise show what nio made of the answer."""
    if not isinstance(resp, cls):
        transport = getattr(resp, "transport_response", None)
        body = getattr(transport, "_body", None)  # aiohttp keeps the body it already read
        raise AssertionError(
            f"expected {cls.__name__}, nio returned {type(resp).__name__} ({resp}) for "
            f"HTTP {getattr(transport, 'status', '?')} {getattr(transport, 'url', '')} "
            f"with body {body!r}")
    return resp


def expect_error(resp: object, cls: type[R], http_status: int, errcode: str) -> R:
    """nio returned error class ``cls`` carrying the spec's HTTP status and errcode."""
    err = expect(resp, cls)
    assert isinstance(err, nio.ErrorResponse)
    assert err.transport_response.status == http_status, err
    assert err.status_code == errcode, err
    return err


@contextlib.asynccontextmanager
async def nio_client(server: ServerProcess, user: str = "") -> AsyncIterator[nio.AsyncClient]:
    client = nio.AsyncClient(server.base_url, user, config=CONFIG)
    try:
        yield client
    finally:
        await client.close()


async def register(client: nio.AsyncClient, localpart: str, device_name: str = "") -> nio.RegisterResponse:
    resp = expect(await client.register(localpart, PASSWORD, device_name=device_name),
                  nio.RegisterResponse)
    assert resp.user_id == mxid(localpart)
    return resp


async def device_names(client: nio.AsyncClient) -> dict[str, str | None]:
    resp = expect(await client.devices(), nio.DevicesResponse)
    names = {d.id: d.display_name for d in resp.devices}
    assert len(names) == len(resp.devices), f"duplicate device ids: {resp.devices}"
    return names


async def assert_token_dead(server: ServerProcess, user_id: str, device_id: str, token: str) -> None:
    """A client restoring this login gets M_UNKNOWN_TOKEN, as nio users do after a revocation."""
    async with nio_client(server) as ghost:
        ghost.restore_login(user_id, device_id, token)
        expect_error(await ghost.whoami(), nio.WhoamiError, 401, "M_UNKNOWN_TOKEN")


# --------------------------------------------------------------------------------------------


def test_register_then_whoami(hearth: ServerProcess) -> None:
    """nio's one-shot `register` (auth m.login.dummy, no session) logs the client in."""

    async def scenario() -> None:
        async with nio_client(hearth, "alice") as alice:
            reg = await register(alice, "alice", device_name="nio phone")
            assert reg.access_token and reg.device_id
            # nio adopted the new login
            assert (alice.user_id, alice.device_id, alice.access_token) == (
                reg.user_id, reg.device_id, reg.access_token)

            who = expect(await alice.whoami(), nio.WhoamiResponse)
            assert who.user_id == mxid("alice")
            assert who.device_id == reg.device_id
            assert who.is_guest is False

            # initial_device_display_name reached the device list
            assert await device_names(alice) == {reg.device_id: "nio phone"}

        async with nio_client(hearth) as mallory:
            dup = await mallory.register("alice", "another password")
            expect_error(dup, RegisterErrorResponse, 400, "M_USER_IN_USE")
            assert not mallory.access_token

    asyncio.run(scenario())


def test_password_login(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with nio_client(hearth) as first:
            reg = await register(first, "bob")

        async with nio_client(hearth, "bob") as laptop:
            bad = await laptop.login("not the password")
            expect_error(bad, nio.LoginError, 403, "M_FORBIDDEN")
            assert not laptop.access_token

            login = expect(await laptop.login(PASSWORD, device_name="laptop"), nio.LoginResponse)
            assert login.user_id == mxid("bob")
            assert login.device_id and login.device_id != reg.device_id
            assert login.access_token and login.access_token != reg.access_token
            assert laptop.access_token == login.access_token

            who = expect(await laptop.whoami(), nio.WhoamiResponse)
            assert (who.user_id, who.device_id) == (mxid("bob"), login.device_id)

        # the full user id works as the identifier too
        async with nio_client(hearth, mxid("bob")) as tablet:
            login2 = expect(await tablet.login(PASSWORD), nio.LoginResponse)
            assert login2.user_id == mxid("bob")
            assert login2.device_id not in (reg.device_id, login.device_id)

        async with nio_client(hearth, "nobody") as stranger:
            expect_error(await stranger.login(PASSWORD), nio.LoginError, 403, "M_FORBIDDEN")

    asyncio.run(scenario())


def test_devices_rename_and_delete_with_uia(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with nio_client(hearth) as phone, nio_client(hearth, "carol") as laptop:
            reg = await register(phone, "carol", device_name="phone")
            login = expect(await laptop.login(PASSWORD, device_name="laptop"), nio.LoginResponse)
            phone_id, laptop_id = reg.device_id, login.device_id
            # Let the new login be seen once before the list is read; the list right after a
            # login is test_device_list_right_after_another_login's subject.
            expect(await laptop.whoami(), nio.WhoamiResponse)

            assert await device_names(phone) == {phone_id: "phone", laptop_id: "laptop"}
            # both devices see the same list
            assert await device_names(laptop) == {phone_id: "phone", laptop_id: "laptop"}

            expect(await phone.update_device(laptop_id, {"display_name": "work laptop"}),
                   nio.UpdateDeviceResponse)
            assert await device_names(laptop) == {phone_id: "phone", laptop_id: "work laptop"}

            expect_error(await phone.update_device("NOSUCHDEVICE", {"display_name": "x"}),
                         nio.UpdateDeviceError, 404, "M_NOT_FOUND")

            # UIA step 1: no auth -> 401 with a session and the password flow
            challenge = expect(await phone.delete_devices([laptop_id]), nio.DeleteDevicesAuthResponse)
            assert challenge.transport_response.status == 401
            assert challenge.session
            assert ["m.login.password"] in [f["stages"] for f in challenge.flows]
            # nothing deleted yet
            expect(await laptop.whoami(), nio.WhoamiResponse)

            # a wrong password is another 401 challenge, and still deletes nothing
            auth = {"type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "carol"},
                    "session": challenge.session}
            wrong = await phone.delete_devices([laptop_id], {**auth, "password": "wrong"})
            expect(wrong, nio.DeleteDevicesAuthResponse)
            assert wrong.transport_response.status == 401
            expect(await laptop.whoami(), nio.WhoamiResponse)
            assert set(await device_names(phone)) == {phone_id, laptop_id}

            # UIA step 2: the password, with the session
            done = await phone.delete_devices([laptop_id], {**auth, "password": PASSWORD})
            expect(done, nio.DeleteDevicesResponse)

            assert await device_names(phone) == {phone_id: "phone"}
            await assert_token_dead(hearth, mxid("carol"), laptop_id, login.access_token)
            # the deleting device is untouched
            who = expect(await phone.whoami(), nio.WhoamiResponse)
            assert who.device_id == phone_id

    asyncio.run(scenario())


def test_profile_displayname_and_avatar(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with nio_client(hearth) as dave, nio_client(hearth) as erin:
            await register(dave, "dave")
            await register(erin, "erin")

            # registration gives the localpart as display name (as Synapse does)
            name = expect(await dave.get_displayname(), nio.ProfileGetDisplayNameResponse)
            assert name.displayname == "dave"

            expect(await dave.set_displayname("Dave Ünïcødé 🐉"), nio.ProfileSetDisplayNameResponse)
            name = expect(await dave.get_displayname(), nio.ProfileGetDisplayNameResponse)
            assert name.displayname == "Dave Ünïcødé 🐉"

            avatar = "mxc://test.local/AvatarMediaId"
            expect(await dave.set_avatar(avatar), nio.ProfileSetAvatarResponse)
            got = expect(await dave.get_avatar(), nio.ProfileGetAvatarResponse)
            assert got.avatar_url == avatar

            own = expect(await dave.get_profile(), nio.ProfileGetResponse)
            assert (own.displayname, own.avatar_url) == ("Dave Ünïcødé 🐉", avatar)

            # another user reads the same profile, by user id
            seen = expect(await erin.get_profile(mxid("dave")), nio.ProfileGetResponse)
            assert (seen.displayname, seen.avatar_url) == ("Dave Ünïcødé 🐉", avatar)
            seen_name = expect(await erin.get_displayname(mxid("dave")), nio.ProfileGetDisplayNameResponse)
            assert seen_name.displayname == "Dave Ünïcødé 🐉"
            seen_avatar = expect(await erin.get_avatar(mxid("dave")), nio.ProfileGetAvatarResponse)
            assert seen_avatar.avatar_url == avatar

            # erin's own profile is untouched by dave's changes
            erin_profile = expect(await erin.get_profile(), nio.ProfileGetResponse)
            assert erin_profile.displayname == "erin"
            assert erin_profile.avatar_url is None

            expect_error(await erin.get_profile(mxid("nosuchuser")), nio.ProfileGetError,
                         404, "M_NOT_FOUND")

    asyncio.run(scenario())


def test_logout(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with (nio_client(hearth) as phone, nio_client(hearth, "frank") as laptop,
                    nio_client(hearth, "frank") as tablet):
            reg = await register(phone, "frank", device_name="phone")
            lap = expect(await laptop.login(PASSWORD, device_name="laptop"), nio.LoginResponse)

            expect(await laptop.logout(), nio.LogoutResponse)
            assert not laptop.access_token  # nio forgot it
            await assert_token_dead(hearth, mxid("frank"), lap.device_id, lap.access_token)
            # logging out deletes the device; the other login is unaffected
            assert await device_names(phone) == {reg.device_id: "phone"}

            tab = expect(await tablet.login(PASSWORD, device_name="tablet"), nio.LoginResponse)
            expect(await tablet.whoami(), nio.WhoamiResponse)
            assert set(await device_names(phone)) == {reg.device_id, tab.device_id}

            expect(await phone.logout(all_devices=True), nio.LogoutResponse)
            await assert_token_dead(hearth, mxid("frank"), reg.device_id, reg.access_token)
            await assert_token_dead(hearth, mxid("frank"), tab.device_id, tab.access_token)

            # the account itself survives: a fresh login sees only its own device
            async with nio_client(hearth, "frank") as again:
                new = expect(await again.login(PASSWORD, device_name="desktop"), nio.LoginResponse)
                assert set(await device_names(again)) == {new.device_id}

    asyncio.run(scenario())


# nio 0.26's DevicesResponse schema requires every device to carry the keys display_name,
# last_seen_ip and last_seen_ts (null allowed); if one is missing, devices() returns a
# DevicesError for the whole list. Synapse always sends the four keys, with null for unknowns.


def test_device_list_right_after_another_login(hearth: ServerProcess) -> None:
    """A device that has logged in but made no request yet must not break the other's list."""

    async def scenario() -> None:
        async with nio_client(hearth) as phone, nio_client(hearth, "gina") as laptop:
            reg = await register(phone, "gina", device_name="phone")
            login = expect(await laptop.login(PASSWORD, device_name="laptop"), nio.LoginResponse)
            assert await device_names(phone) == {reg.device_id: "phone", login.device_id: "laptop"}

    asyncio.run(scenario())
