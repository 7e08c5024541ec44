"""The console's routes: sign-in (`/session`), the public page configuration, and the static pages.

The pages hold no data: every figure, list and document comes from the services' own APIs, called by the
browser with the user's bearer token (kept in sessionStorage, sent in the Authorization header, never in a URL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.console import commands, domain
from services.console.settings import ConsoleSettings
from shared.auth import Actor, Role, mint_token, require_roles
from shared.errors import NotFound, Rejected

STATIC = Path(__file__).with_name("static")
MEDIA = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain", ".svg": "image/svg+xml"}
# The page shell and its assets may not be framed by others, and load scripts only from here.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
Anyone = Annotated[Actor, require_roles()]


class SignInRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100, examples=["jane"])
    password: str = Field(min_length=1, max_length=200)


class SignInFailed(Rejected):
    status = 401


def _who(actor_name: str, roles: tuple[Role, ...], account_number: str | None) -> dict[str, Any]:
    pages = domain.navigation(roles)
    return {
        "user": {"name": actor_name, "roles": [r.value for r in roles], "account_number": account_number},
        "navigation": [{"route": p.route, "label": p.label} for p in pages],
        "home": domain.home(roles).route,
    }


def _content_security_policy(settings: ConsoleSettings) -> str:
    apis = " ".join(
        url
        for url in (
            settings.payments_url,
            settings.credit_notes_url,
            settings.receipts_url,
            settings.kpi_url,
            settings.collections_url,
        )
        if url
    )
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self' {apis}; frame-src 'self' blob:; object-src 'self' blob:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def router(sessions: async_sessionmaker[AsyncSession], settings: ConsoleSettings) -> APIRouter:
    routes = APIRouter()
    secret = settings.jwt_secret.get_secret_value()
    users = [(u.username, u.name, u.password_hash, tuple(u.roles), u.account_number) for u in settings.users]
    assets = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA}
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": _content_security_policy(settings)}

    @routes.post("/session", tags=["sign-in"])
    async def sign_in(body: SignInRequest) -> dict[str, Any]:
        """Development sign-in against the configured user list; answers a short-lived bearer token."""
        if settings.oidc_issuer:
            raise NotFound("sign_in_elsewhere", f"sign in at {settings.oidc_issuer}")
        found = domain.check_sign_in(body.username, body.password, users)
        if found is None:
            raise SignInFailed("sign_in_failed", "user name or password is wrong", field="password")
        now = datetime.now(UTC)
        expires_at = now + timedelta(minutes=settings.token_minutes)
        async with sessions() as session, session.begin():
            await commands.open_session(session, found, now=now, expires_at=expires_at)
        token = mint_token(
            secret,
            user=found.name,
            roles=list(found.roles),
            ttl=timedelta(minutes=settings.token_minutes),
            account_number=found.account_number,
        )
        return {
            "token": token,
            "expires_at": expires_at.isoformat(),
            **_who(found.name, found.roles, found.account_number),
        }

    @routes.get("/session", tags=["sign-in"])
    async def who_am_i(actor: Anyone) -> dict[str, Any]:
        """The signed-in user's name, roles and navigation (the page asks after a reload)."""
        roles = tuple(r for r in Role if r in actor.roles)
        if not roles:
            raise HTTPException(403, "this token carries no role the console knows")
        return _who(actor.name, roles, actor.account_number)

    @routes.delete("/session", status_code=204, tags=["sign-in"])
    async def sign_out(actor: Anyone) -> Response:
        async with sessions() as session, session.begin():
            await commands.close_sessions(session, actor.user_id, now=datetime.now(UTC))
        return Response(status_code=204)

    @routes.get("/config.json", tags=["pages"])
    async def page_config() -> dict[str, Any]:
        """Where the services are and how the utility shows money and dates. Public: it holds no data."""
        return {
            "services": {
                "payments": settings.payments_url.rstrip("/"),
                "credit_notes": settings.credit_notes_url.rstrip("/"),
                "receipts": settings.receipts_url.rstrip("/"),
                "kpi": settings.kpi_url.rstrip("/"),
                "collections": settings.collections_url.rstrip("/") if settings.collections_url else None,
            },
            "currency": settings.currency,
            "locale": settings.locale,
            "time_zone": settings.time_zone,
            "date_style": settings.date_style,
            "page_size": settings.max_page_size,
            "sign_in": {"oidc_issuer": settings.oidc_issuer, "client_id": settings.oidc_client_id}
            if settings.oidc_issuer
            else {"development": True},
        }

    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def shell() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(), headers={**headers, "Cache-Control": "no-store"})

    @pages.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise NotFound("not_found", f"no static file {name}")
        return FileResponse(
            path, media_type=MEDIA[path.suffix], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        )

    both = APIRouter()
    both.include_router(routes)
    both.include_router(pages)
    return both
