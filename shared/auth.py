"""Bearer-token (JWT) authentication: the four staff roles, and customers scoped to one account.

The acting user always comes from the token. A customer's token names one account (`account_number` claim);
routes about an account use `require_account` so that any other account answers 404, never 403: a customer
cannot learn which account numbers exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALGORITHM = "HS256"
ISSUER = "paydesk"


class Role(StrEnum):
    CUSTOMER_EXECUTIVE = "customer_executive"
    RECOVERY_EXECUTIVE = "recovery_executive"
    BILLING_MANAGER = "billing_manager"
    ADMIN = "admin"
    # A utility's customer using the self-service pages: sees one account only (the token's `account_number`).
    CUSTOMER = "customer"
    # A payee of the payouts service: reads only its own payee (the token's `payee_id` claim).
    PAYEE = "payee"


@dataclass(frozen=True)
class Actor:
    """The authenticated staff member making a request."""

    user_id: str
    name: str
    roles: frozenset[Role]
    # Set for customers only: the one account their token may read.
    account_number: str | None = None
    # Set on a payee's token: the one payee it may see.
    payee_id: str | None = None

    def has_any(self, roles: tuple[Role, ...]) -> bool:
        return Role.ADMIN in self.roles or bool(self.roles.intersection(roles))


def mint_token(
    secret: str,
    *,
    user: str,
    roles: list[Role],
    ttl: timedelta = timedelta(hours=8),
    account_number: str | None = None,
    payee_id: str | None = None,
) -> str:
    """A signed token for `user` (display name) with the given roles; a customer's names their one account and a
    payee's its payee id."""
    if Role.CUSTOMER in roles and not account_number:
        raise ValueError("a customer token must name its account_number")
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": user.lower().replace(" ", "."),
        "name": user,
        "roles": [r.value for r in roles],
        "iat": now,
        "exp": now + ttl,
    }
    if account_number:
        claims["account_number"] = account_number
    if payee_id is not None:
        claims["payee_id"] = payee_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Actor:
    """Verify signature, expiry and issuer; raises `jwt.InvalidTokenError` otherwise."""
    return _verify(secret, token)[0]


def _verify(secret: str, token: str) -> tuple[Actor, float]:
    """The token's actor and its expiry (seconds since the epoch), once signature, expiry and issuer hold."""
    claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["exp", "sub"]})
    roles = frozenset(Role(r) for r in claims.get("roles", []) if r in Role.__members__.values())
    account = claims.get("account_number")
    if Role.CUSTOMER in roles and not account:
        raise jwt.InvalidTokenError("a customer token must name its account_number")
    payee_id = claims.get("payee_id")
    actor = Actor(
        user_id=str(claims["sub"]),
        name=str(claims.get("name", claims["sub"])),
        roles=roles,
        account_number=str(account) if account else None,
        payee_id=str(payee_id) if payee_id is not None else None,
    )
    return actor, float(claims["exp"])


class VerifiedTokens:
    """Tokens whose signature was checked lately, by their exact text: a counter's browser sends the same token
    with every request, and HS256 verification and claim parsing cost 0.1-0.8 ms of a request's ~10 ms CPU.

    An entry answers for at most `seconds` after its check and never at or past the token's own `exp`; only valid
    tokens are kept (a bad one is verified, and refused, every time). At `size` entries the oldest goes first.
    """

    def __init__(self, *, size: int = 4096, seconds: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.seconds = seconds
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[Actor, float]] = {}

    def actor(self, secret: str, token: str) -> Actor:
        """The token's actor, verified now or within the last `seconds`; `jwt.InvalidTokenError` if invalid."""
        key = (secret, token)
        now = self.clock()
        cached = self._entries.get(key)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._entries[key]
        actor, expires = _verify(secret, token)
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (actor, min(expires, now + self.seconds))
        return actor

    def __len__(self) -> int:
        return len(self._entries)


_verified = VerifiedTokens()


_bearer = HTTPBearer(auto_error=False)


def allowed_roles(roles: tuple[Role, ...]) -> list[str]:
    """Who passes `require_roles(*roles)`: those roles and admin; every role when none is named."""
    return sorted({r.value for r in (roles or tuple(Role))} | {Role.ADMIN.value})


def _authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Actor:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    secret: str = request.app.state.jwt_secret
    try:
        return _verified.actor(secret, credentials.credentials)
    except jwt.InvalidTokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


def require_roles(*roles: Role) -> object:
    """FastAPI dependency: the request's `Actor`, if its token is valid and carries one of `roles` (or admin).

    The roles that pass are declared as the bearer scheme's scopes, so each operation's OpenAPI `security`
    says who may call it (OpenAPI 3.1 allows role names there for non-OAuth schemes); tests hold the routes
    to it.
    """

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Actor:
        actor = _authenticated(request, credentials)
        if roles and not actor.has_any(roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires role: {', '.join(r.value for r in roles)}")
        return actor

    return Security(dependency, scopes=allowed_roles(roles))


def require_account(*staff_roles: Role, parameter: str = "account_number") -> object:
    """FastAPI dependency for routes about one account (the path parameter `parameter`).

    Staff with one of `staff_roles` (or admin) read any account. A customer reads only the account their token
    names: any other answers 404 `not_found`, exactly as an account that does not exist, so accounts cannot be
    probed. Anyone else gets 403.
    """

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Actor:
        actor = _authenticated(request, credentials)
        if staff_roles and actor.has_any(staff_roles):
            return actor
        if Role.CUSTOMER in actor.roles:
            if actor.account_number is None or request.path_params.get(parameter) != actor.account_number:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such account")
            return actor
        allowed = ", ".join([*(r.value for r in staff_roles), Role.CUSTOMER.value])
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires role: {allowed}")

    # Declared like `require_roles`: the operation's OpenAPI `security` names the staff roles, admin and customer.
    return Security(dependency, scopes=allowed_roles((*staff_roles, Role.CUSTOMER)))
