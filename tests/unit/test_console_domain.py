"""The console's pure rules: password hashes, sign-in against the user list, and each role's pages."""

from __future__ import annotations

import pytest

from services.console import domain
from services.console.settings import ConsoleSettings
from shared.auth import Role

USERS = [
    ("jane", "Jane Smith", domain.hash_password("s3cret", iterations=1000), ("customer_executive",), None),
    ("john", "John Doe", domain.hash_password("mine", iterations=1000), ("customer",), "WU-10001"),
    ("nobody", "No Account", domain.hash_password("x", iterations=1000), ("customer",), None),
    ("ghost", "Ghost", domain.hash_password("x", iterations=1000), ("wizard",), None),
]


def test_a_hash_verifies_its_password_only() -> None:
    stored = domain.hash_password("correct horse", iterations=1000)
    assert domain.verify_password("correct horse", stored)
    assert not domain.verify_password("correct horse!", stored)


@pytest.mark.parametrize("stored", ["", "plain", "md5$1$abc$def", "pbkdf2_sha256$x$abc$def", "pbkdf2_sha256$1$!!$"])
def test_a_malformed_hash_never_matches(stored: str) -> None:
    assert not domain.verify_password("anything", stored)


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    assert domain.hash_password("same", iterations=1000) != domain.hash_password("same", iterations=1000)


def test_sign_in_gives_the_user_their_roles_and_token_user_id() -> None:
    found = domain.check_sign_in(" JANE ", "s3cret", USERS)
    assert found == domain.SignIn("jane.smith", "Jane Smith", (Role.CUSTOMER_EXECUTIVE,), None)


def test_a_customer_signs_in_to_their_one_account() -> None:
    found = domain.check_sign_in("john", "mine", USERS)
    assert found is not None and found.roles == (Role.CUSTOMER,) and found.account_number == "WU-10001"


@pytest.mark.parametrize(
    ("username", "password"),
    [("jane", "wrong"), ("unknown", "s3cret"), ("nobody", "x"), ("ghost", "x"), ("jane", "")],
)
def test_sign_in_is_refused(username: str, password: str) -> None:
    assert domain.check_sign_in(username, password, USERS) is None


def test_the_development_users_all_sign_in_with_the_documented_password() -> None:
    users = [(u.username, u.name, u.password_hash, tuple(u.roles), u.account_number) for u in ConsoleSettings().users]
    for username, *_ in users:
        assert domain.check_sign_in(username, "paydesk", users) is not None, username


def test_each_role_sees_the_pages_of_the_seed_flow_and_lands_on_the_first() -> None:
    routes = {role: [p.route for p in domain.navigation((role,))] for role in Role}
    assert routes[Role.BILLING_MANAGER] == ["#/dashboard", "#/payments", "#/reports", "#/alerts", "#/approvals"]
    assert routes[Role.RECOVERY_EXECUTIVE][0] == "#/collections"
    assert routes[Role.CUSTOMER_EXECUTIVE][0] == "#/customer-service"
    assert routes[Role.CUSTOMER] == ["#/my-account"]
    assert set(routes[Role.ADMIN]) == {r for role in Role if role is not Role.CUSTOMER for r in routes[role]}


def test_return_to_dashboard_is_a_page_the_role_may_see() -> None:
    for role in domain.NAVIGATION:
        assert domain.home((role,)) in domain.navigation((role,))
    assert domain.home((Role.CUSTOMER_EXECUTIVE,)).route == "#/customer-service"  # not kpi's 403


def test_a_payee_has_no_console_page_and_uses_the_payouts_self_view() -> None:
    assert domain.navigation((Role.PAYEE,)) == []
    with pytest.raises(ValueError):
        domain.home((Role.PAYEE,))


def test_several_roles_merge_their_pages_without_repeats() -> None:
    pages = domain.navigation((Role.CUSTOMER_EXECUTIVE, Role.BILLING_MANAGER))
    assert pages[0] == domain.CUSTOMER_SERVICE
    assert len(pages) == len(set(pages)) and domain.DASHBOARD in pages


def test_no_role_has_no_home() -> None:
    with pytest.raises(ValueError):
        domain.home(())
