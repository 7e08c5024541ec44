"""The console's one state change: a sign-in session opened or closed, each in one transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.console.domain import SignIn
from services.console.storage import sessions


async def open_session(session: AsyncSession, signed_in: SignIn, *, now: datetime, expires_at: datetime) -> uuid.UUID:
    session_id = uuid.uuid4()
    await session.execute(
        sessions.insert().values(
            id=session_id,
            user_id=signed_in.user_id,
            name=signed_in.name,
            roles=",".join(signed_in.roles),
            account_number=signed_in.account_number,
            signed_in_at=now,
            expires_at=expires_at,
        )
    )
    return session_id


async def close_sessions(session: AsyncSession, user_id: str, *, now: datetime) -> int:
    """Sign-out: every open session of the user ends now (the token itself simply expires)."""
    result = await session.execute(
        update(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.signed_out_at.is_(None), sessions.c.expires_at > now)
        .values(signed_out_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
