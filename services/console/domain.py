"""The console's pure rules: password hashes, who may sign in, and which pages each role sees. No I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from shared.auth import Role

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """`pbkdf2_sha256$iterations$salt$hash`, the form the development user list keeps."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; a malformed hash never matches."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(computed, _unb64(digest))


# A hash no password matches, checked when the user name is unknown so that timing does not reveal users.
_DECOY = hash_password("decoy", salt=b"decoy-salt")


@dataclass(frozen=True)
class SignIn:
    user_id: str
    name: str
    roles: tuple[Role, ...]
    account_number: str | None


@dataclass(frozen=True)
class Page:
    """One entry of the navigation: a route of the single-page app and its label."""

    route: str
    label: str


# The seed's flow diagram: each role lands on its own first page; staff also see what their role may use.
DASHBOARD = Page("#/dashboard", "Dashboard")
REPORTS = Page("#/reports", "Reports")
ALERTS = Page("#/alerts", "Alerts")
APPROVALS = Page("#/approvals", "Approvals")
COLLECTIONS = Page("#/collections", "Collections")
CUSTOMER_SERVICE = Page("#/customer-service", "Customer service")
PAYMENTS = Page("#/payments", "Payments")
RECORD_PAYMENT = Page("#/record-payment", "Record payment")
MY_ACCOUNT = Page("#/my-account", "My account")

NAVIGATION: dict[Role, tuple[Page, ...]] = {
    Role.BILLING_MANAGER: (DASHBOARD, PAYMENTS, REPORTS, ALERTS, APPROVALS),
    Role.RECOVERY_EXECUTIVE: (COLLECTIONS, PAYMENTS, RECORD_PAYMENT),
    Role.CUSTOMER_EXECUTIVE: (CUSTOMER_SERVICE, PAYMENTS, RECORD_PAYMENT),
    Role.ADMIN: (DASHBOARD, CUSTOMER_SERVICE, COLLECTIONS, PAYMENTS, RECORD_PAYMENT, REPORTS, ALERTS, APPROVALS),
    Role.CUSTOMER: (MY_ACCOUNT,),
}


def navigation(roles: tuple[Role, ...]) -> list[Page]:
    """The pages a user with `roles` may open, in the order of their first role; the first is their home."""
    pages: list[Page] = []
    for role in roles:
        for page in NAVIGATION.get(role, ()):
            if page not in pages:
                pages.append(page)
    return pages


def home(roles: tuple[Role, ...]) -> Page:
    """Where "Return to Dashboard" leads: the first page the role may see (never one that answers 403)."""
    pages = navigation(roles)
    if not pages:
        raise ValueError("no page for these roles")
    return pages[0]


def check_sign_in(
    username: str, password: str, users: Sequence[tuple[str, str, str, tuple[str, ...], str | None]]
) -> SignIn | None:
    """The user `username` if `password` matches their hash and their roles are known; otherwise None.

    `users` rows are (username, display name, password hash, role names, account number).
    """
    for known, name, stored, role_names, account in users:
        if hmac.compare_digest(known.casefold().encode(), username.strip().casefold().encode()):
            if not verify_password(password, stored):
                return None
            roles = tuple(Role(r) for r in role_names if r in Role.__members__.values())
            if not roles or (Role.CUSTOMER in roles and not account):
                return None
            return SignIn(user_id=name.lower().replace(" ", "."), name=name, roles=roles, account_number=account)
    verify_password(password, _DECOY)
    return None
