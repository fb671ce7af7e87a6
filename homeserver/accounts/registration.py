"""Creating accounts: user id rules, password policy, guests and shared-secret admin registration."""

from __future__ import annotations

import re
import secrets

from homeserver.accounts.secrets import hash_password
from homeserver.clock import Clock
from homeserver.config import PasswordPolicy
from homeserver.http.errors import MatrixError
from storage.accounts import AccountStore, UserExistsError
from storage.profiles import ProfileStore

# Spec appendix "User Identifiers": the historical-free grammar for new user ids.
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
MAX_USER_ID_LENGTH = 255


def user_in_use() -> MatrixError:
    return MatrixError(400, "M_USER_IN_USE", "User ID already taken.")


class RegistrationService:
    def __init__(self, store: AccountStore, profiles: ProfileStore, clock: Clock,
                 server_name: str, bcrypt_rounds: int, policy: PasswordPolicy) -> None:
        self.store = store
        self.profiles = profiles
        self.clock = clock
        self.server_name = server_name
        self.bcrypt_rounds = bcrypt_rounds
        self.policy = policy

    def user_id_for(self, localpart: str) -> str:
        """Validate a requested localpart and return the full user id."""
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "Username must not be empty")
        if not _LOCALPART.match(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "Username may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'")
        if localpart.startswith("_"):
            raise MatrixError(400, "M_INVALID_USERNAME", "Usernames may not start with '_'")
        if localpart.isdigit():
            # All-digit names are what guest accounts get.
            raise MatrixError(400, "M_INVALID_USERNAME", "Usernames may not be all digits")
        user_id = f"@{localpart}:{self.server_name}"
        if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID is longer than 255 bytes")
        return user_id

    async def check_available(self, localpart: str) -> str:
        user_id = self.user_id_for(localpart)
        if await self.store.user_id_taken(user_id):
            raise user_in_use()
        return user_id

    def check_password_policy(self, password: str) -> None:
        p = self.policy
        if not p.enabled:
            return
        problems = []
        if len(password) < p.minimum_length:
            problems.append(f"at least {p.minimum_length} characters")
        if p.require_digit and not any(c.isdigit() for c in password):
            problems.append("a digit")
        if p.require_symbol and all(c.isalnum() for c in password):
            problems.append("a symbol")
        if p.require_lowercase and not any(c.islower() for c in password):
            problems.append("a lowercase letter")
        if p.require_uppercase and not any(c.isupper() for c in password):
            problems.append("an uppercase letter")
        if problems:
            raise MatrixError(400, "M_WEAK_PASSWORD", "Password needs " + ", ".join(problems))

    async def register(self, localpart: str, password: str | None, *, admin: bool = False,
                       displayname: str | None = None, user_type: str | None = None) -> str:
        """Create the account (and its default display name); returns the user id."""
        user_id = self.user_id_for(localpart)
        if password is not None:
            self.check_password_policy(password)
        if await self.store.user_id_taken(user_id):
            raise user_in_use()
        password_hash = await hash_password(password, self.bcrypt_rounds) if password else None
        try:
            await self.store.create_user(user_id, password_hash, self.clock.time_msec(),
                                         admin=admin, user_type=user_type)
        except UserExistsError:
            raise user_in_use() from None
        await self.profiles.set_field(user_id, "displayname", displayname or localpart)
        return user_id

    async def register_guest(self) -> str:
        for _ in range(10):
            user_id = f"@{secrets.randbelow(10**12):012d}:{self.server_name}"
            try:
                await self.store.create_user(user_id, None, self.clock.time_msec(), is_guest=True)
                return user_id
            except UserExistsError:
                continue
        raise MatrixError(500, "M_UNKNOWN", "Could not allocate a guest user id")

    async def change_password(self, user_id: str, new_password: str) -> None:
        self.check_password_policy(new_password)
        await self.store.set_password_hash(user_id, await hash_password(new_password, self.bcrypt_rounds))
