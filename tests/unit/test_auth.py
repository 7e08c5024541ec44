"""JWT bearer tokens and role checks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared import auth
from shared.auth import ALGORITHM, ISSUER, Actor, Role, decode_token, mint_token, require_account, require_roles

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TestTokens:
    def test_mint_then_decode_round_trips_name_and_roles(self) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.BILLING_MANAGER, Role.CUSTOMER_EXECUTIVE])
        actor = decode_token(SECRET, token)
        assert actor.name == "Jane Doe"
        assert actor.roles == frozenset({Role.BILLING_MANAGER, Role.CUSTOMER_EXECUTIVE})

    def test_user_id_is_the_lowercased_dotted_name(self) -> None:
        actor = decode_token(SECRET, mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN]))
        assert actor.user_id == "jane.doe"

    def test_a_token_with_no_roles_decodes_to_no_roles(self) -> None:
        assert decode_token(SECRET, mint_token(SECRET, user="Jane Doe", roles=[])).roles == frozenset()

    def test_token_carries_issuer_and_expiry(self) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN], ttl=timedelta(minutes=5))
        claims = jwt.decode(token, SECRET, algorithms=[ALGORITHM], issuer=ISSUER)
        assert claims["iss"] == "paydesk"
        assert claims["roles"] == ["admin"]
        assert 0 < claims["exp"] - claims["iat"] <= 300

    def test_an_expired_token_is_rejected(self) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN], ttl=timedelta(seconds=-10))
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, token)

    def test_a_token_signed_with_another_secret_is_rejected(self) -> None:
        token = mint_token(OTHER_SECRET, user="Jane Doe", roles=[Role.ADMIN])
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, token)

    def test_a_tampered_payload_is_rejected(self) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.CUSTOMER_EXECUTIVE])
        header, payload, signature = token.split(".")
        claims = json.loads(_unb64(payload))
        claims["roles"] = ["admin"]
        forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, forged)

    def test_a_tampered_signature_is_rejected(self) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN])
        header, payload, signature = token.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, ".".join([header, payload, flipped]))

    @pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
    def test_garbage_is_rejected(self, token: str) -> None:
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, token)

    def test_an_unsigned_none_algorithm_token_is_rejected(self) -> None:
        now = datetime.now(UTC)
        claims = {"iss": ISSUER, "sub": "jane.doe", "roles": ["admin"], "exp": now + timedelta(hours=1)}
        token = jwt.encode(claims, None, algorithm="none")
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, token)

    def test_a_token_from_another_issuer_is_rejected(self) -> None:
        now = datetime.now(UTC)
        claims = {"iss": "someone-else", "sub": "jane.doe", "roles": ["admin"], "exp": now + timedelta(hours=1)}
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, jwt.encode(claims, SECRET, algorithm=ALGORITHM))

    def test_a_token_without_expiry_is_rejected(self) -> None:
        claims = {"iss": ISSUER, "sub": "jane.doe", "roles": ["admin"]}
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, jwt.encode(claims, SECRET, algorithm=ALGORITHM))

    def test_unknown_roles_in_a_token_are_ignored(self) -> None:
        now = datetime.now(UTC)
        claims = {
            "iss": ISSUER,
            "sub": "jane.doe",
            "name": "Jane Doe",
            "roles": ["billing_manager", "superuser"],
            "exp": now + timedelta(hours=1),
        }
        actor = decode_token(SECRET, jwt.encode(claims, SECRET, algorithm=ALGORITHM))
        assert actor.roles == frozenset({Role.BILLING_MANAGER})


def actor(*roles: Role) -> Actor:
    return Actor(user_id="jane.doe", name="Jane Doe", roles=frozenset(roles))


class TestActorHasAny:
    @pytest.mark.parametrize("required", [(role,) for role in Role] + [()])
    def test_admin_passes_any_role_check(self, required: tuple[Role, ...]) -> None:
        assert actor(Role.ADMIN).has_any(required)

    def test_customer_executive_does_not_pass_a_billing_manager_check(self) -> None:
        assert not actor(Role.CUSTOMER_EXECUTIVE).has_any((Role.BILLING_MANAGER,))

    def test_recovery_executive_does_not_pass_a_billing_manager_check(self) -> None:
        assert not actor(Role.RECOVERY_EXECUTIVE).has_any((Role.BILLING_MANAGER,))

    def test_a_matching_role_passes(self) -> None:
        assert actor(Role.BILLING_MANAGER).has_any((Role.BILLING_MANAGER,))

    def test_any_one_of_several_roles_passes(self) -> None:
        assert actor(Role.CUSTOMER_EXECUTIVE).has_any((Role.BILLING_MANAGER, Role.CUSTOMER_EXECUTIVE))

    def test_an_actor_without_roles_passes_no_check(self) -> None:
        assert not actor().has_any((Role.CUSTOMER_EXECUTIVE,))

    def test_a_decoded_customer_executive_cannot_act_as_billing_manager(self) -> None:
        decoded = decode_token(SECRET, mint_token(SECRET, user="Jane Doe", roles=[Role.CUSTOMER_EXECUTIVE]))
        assert not decoded.has_any((Role.BILLING_MANAGER,))
        assert decoded.has_any((Role.CUSTOMER_EXECUTIVE,))


class TestCustomers:
    """A customer's token names one account; `require_account` answers 404 for every other one."""

    @staticmethod
    def _client() -> TestClient:
        app = FastAPI()
        app.state.jwt_secret = SECRET

        @app.get("/accounts/{account_number}/balance")
        async def balance(
            account_number: str, actor: Annotated[Actor, require_account(Role.CUSTOMER_EXECUTIVE)]
        ) -> dict[str, str]:
            return {"account": account_number, "by": actor.name}

        @app.get("/payments")
        async def staff_only(actor: Annotated[Actor, require_roles(Role.CUSTOMER_EXECUTIVE)]) -> dict[str, str]:
            return {"by": actor.name}

        return TestClient(app)

    def test_a_customer_token_carries_its_account(self) -> None:
        token = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number="WU-10001")
        actor = decode_token(SECRET, token)
        assert actor.roles == frozenset({Role.CUSTOMER}) and actor.account_number == "WU-10001"

    def test_a_customer_token_without_an_account_cannot_be_minted_or_accepted(self) -> None:
        with pytest.raises(ValueError):
            mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER])
        forged = jwt.encode(
            {"iss": ISSUER, "sub": "john", "roles": ["customer"], "exp": datetime.now(UTC) + timedelta(minutes=5)},
            SECRET,
            algorithm=ALGORITHM,
        )
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(SECRET, forged)

    def test_staff_tokens_have_no_account(self) -> None:
        assert decode_token(SECRET, mint_token(SECRET, user="Jane", roles=[Role.ADMIN])).account_number is None

    @pytest.mark.parametrize("other", ["WU-10002", "wu-10001", "WU-1000", "WU-10001 ", "%2e%2e"])
    def test_any_other_account_answers_404_exactly_like_a_missing_one(self, other: str) -> None:
        client = self._client()
        token = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number="WU-10001")
        headers = {"Authorization": f"Bearer {token}"}
        own = client.get("/accounts/WU-10001/balance", headers=headers)
        assert own.status_code == 200 and own.json() == {"account": "WU-10001", "by": "John Doe"}
        answer = client.get(f"/accounts/{other}/balance", headers=headers)
        assert answer.status_code == 404

    def test_staff_read_any_account_and_customers_no_staff_route(self) -> None:
        client = self._client()
        clerk = mint_token(SECRET, user="Jane", roles=[Role.CUSTOMER_EXECUTIVE])
        customer = mint_token(SECRET, user="John Doe", roles=[Role.CUSTOMER], account_number="WU-10001")
        manager = mint_token(SECRET, user="Bill", roles=[Role.BILLING_MANAGER])
        get = client.get
        assert get("/accounts/WU-99999/balance", headers={"Authorization": f"Bearer {clerk}"}).status_code == 200
        assert get("/payments", headers={"Authorization": f"Bearer {customer}"}).status_code == 403
        assert get("/accounts/WU-10001/balance", headers={"Authorization": f"Bearer {manager}"}).status_code == 403
        assert get("/accounts/WU-10001/balance").status_code == 401


class TestPayeeTokens:
    def test_a_payee_token_carries_its_payee_id_and_staff_tokens_none(self) -> None:
        payee = decode_token(SECRET, mint_token(SECRET, user="Ann Agent", roles=[Role.PAYEE], payee_id="PE-10001"))
        assert (payee.roles, payee.payee_id) == (frozenset({Role.PAYEE}), "PE-10001")
        assert not payee.has_any((Role.BILLING_MANAGER,))
        assert decode_token(SECRET, mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN])).payee_id is None


class TestVerifiedTokens:
    """The cache of verified tokens answers for a short while, never at or past a token's expiry, and only for
    the secret and exact text that were verified."""

    @pytest.fixture
    def decodes(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every signature check the cache asks PyJWT for."""
        seen: list[str] = []
        real = jwt.decode

        def counting(token: str, *args: object, **kwargs: object) -> dict[str, object]:
            seen.append(token)
            return real(token, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(jwt, "decode", counting)  # the module auth.py calls it through
        return seen

    def test_a_token_is_verified_once_then_answered_from_the_cache(self, decodes: list[str]) -> None:
        now = datetime.now(UTC).timestamp()
        cache = auth.VerifiedTokens(seconds=60, clock=lambda: now)
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.CUSTOMER_EXECUTIVE])
        first, second = cache.actor(SECRET, token), cache.actor(SECRET, token)
        assert first == second and first.name == "Jane Doe" and decodes == [token]

    def test_an_entry_answers_for_at_most_its_seconds(self, decodes: list[str]) -> None:
        clock = [datetime.now(UTC).timestamp()]
        cache = auth.VerifiedTokens(seconds=60, clock=lambda: clock[0])
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.CUSTOMER_EXECUTIVE])
        cache.actor(SECRET, token)
        clock[0] += 59.9
        cache.actor(SECRET, token)
        assert len(decodes) == 1
        clock[0] += 0.1
        cache.actor(SECRET, token)
        assert len(decodes) == 2

    def test_never_at_or_past_the_token_expiry(self, decodes: list[str]) -> None:
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.CUSTOMER_EXECUTIVE], ttl=timedelta(seconds=30))
        expires = float(jwt.decode(token, SECRET, algorithms=[ALGORITHM], issuer=ISSUER)["exp"])
        decodes.clear()
        clock = [expires - 20]
        cache = auth.VerifiedTokens(seconds=3600, clock=lambda: clock[0])
        cache.actor(SECRET, token)
        clock[0] = expires - 0.001
        cache.actor(SECRET, token)
        assert len(decodes) == 1
        clock[0] = expires  # the cache lets go; PyJWT (on the real clock here) decides again
        cache.actor(SECRET, token)
        assert len(decodes) == 2

    def test_an_expired_token_is_refused_even_when_it_was_cached(self) -> None:
        expired = mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN], ttl=timedelta(seconds=-1))
        cache = auth.VerifiedTokens()
        with pytest.raises(jwt.ExpiredSignatureError):
            cache.actor(SECRET, expired)
        assert len(cache) == 0

    def test_invalid_tokens_are_checked_every_time_and_never_kept(self, decodes: list[str]) -> None:
        cache = auth.VerifiedTokens()
        forged = mint_token(OTHER_SECRET, user="Mallory", roles=[Role.ADMIN])
        for _ in range(2):
            with pytest.raises(jwt.InvalidSignatureError):
                cache.actor(SECRET, forged)
        assert len(decodes) == 2 and len(cache) == 0

    def test_a_token_verified_under_one_secret_is_not_taken_under_another(self) -> None:
        cache = auth.VerifiedTokens()
        token = mint_token(SECRET, user="Jane Doe", roles=[Role.ADMIN])
        cache.actor(SECRET, token)
        with pytest.raises(jwt.InvalidSignatureError):
            cache.actor(OTHER_SECRET, token)

    def test_the_cache_is_bounded_and_drops_the_oldest_first(self, decodes: list[str]) -> None:
        cache = auth.VerifiedTokens(size=2)
        tokens = [mint_token(SECRET, user=f"Teller {n}", roles=[Role.CUSTOMER_EXECUTIVE]) for n in range(3)]
        for token in tokens:
            cache.actor(SECRET, token)
        assert len(cache) == 2
        cache.actor(SECRET, tokens[2])
        cache.actor(SECRET, tokens[0])
        assert decodes == [*tokens, tokens[0]]
