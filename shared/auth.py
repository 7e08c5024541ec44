"""Bearer-token (JWT) authentication with the four staff roles. The acting user always comes from the token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALGORITHM = "HS256"
ISSUER = "paydesk"


class Role(StrEnum):
    CUSTOMER_EXECUTIVE = "customer_executive"
    RECOVERY_EXECUTIVE = "recovery_executive"
    BILLING_MANAGER = "billing_manager"
    ADMIN = "admin"
    # A payee of the payouts service: reads only its own payee (the token's `payee_id` claim).
    PAYEE = "payee"


@dataclass(frozen=True)
class Actor:
    """The authenticated staff member making a request."""

    user_id: str
    name: str
    roles: frozenset[Role]
    # Set on a payee's token: the one payee it may see.
    payee_id: str | None = None

    def has_any(self, roles: tuple[Role, ...]) -> bool:
        return Role.ADMIN in self.roles or bool(self.roles.intersection(roles))


def mint_token(
    secret: str, *, user: str, roles: list[Role], ttl: timedelta = timedelta(hours=8), payee_id: str | None = None
) -> str:
    """A signed token for `user` (display name) with the given roles (and, for a payee, its payee id)."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": user.lower().replace(" ", "."),
        "name": user,
        "roles": [r.value for r in roles],
        "iat": now,
        "exp": now + ttl,
    }
    if payee_id is not None:
        claims["payee_id"] = payee_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Actor:
    """Verify signature, expiry and issuer; raises `jwt.InvalidTokenError` otherwise."""
    claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["exp", "sub"]})
    roles = frozenset(Role(r) for r in claims.get("roles", []) if r in Role.__members__.values())
    payee_id = claims.get("payee_id")
    return Actor(
        user_id=str(claims["sub"]),
        name=str(claims.get("name", claims["sub"])),
        roles=roles,
        payee_id=str(payee_id) if payee_id is not None else None,
    )


_bearer = HTTPBearer(auto_error=False)


def require_roles(*roles: Role) -> object:
    """FastAPI dependency: the request's `Actor`, if its token is valid and carries one of `roles` (or admin)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Actor:
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        secret: str = request.app.state.jwt_secret
        try:
            actor = decode_token(secret, credentials.credentials)
        except jwt.InvalidTokenError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
            ) from exc
        if roles and not actor.has_any(roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires role: {', '.join(r.value for r in roles)}")
        return actor

    return Depends(dependency)
