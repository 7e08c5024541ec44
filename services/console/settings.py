from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# pbkdf2_sha256$<iterations>$<salt>$<hash> of "paydesk", for the development users only (see domain.hash_password).
DEV_PASSWORD_HASH = (
    "pbkdf2_sha256$200000$cGF5ZGVzay1kZXY$Gide8ccLc4jFZJsl1cv7xw2hdXrQwlobNZSuNP69pmQ="  # pragma: allowlist secret
)


class ConsoleUser(BaseModel):
    """One development sign-in: a user name, a password hash, the roles (and a customer's one account)."""

    username: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=100, description="Display name: who recorded or approved what.")
    password_hash: str = Field(description="pbkdf2_sha256$iterations$salt$hash (`paydesk hash-password`).")
    roles: list[str] = Field(min_length=1)
    account_number: str | None = Field(default=None, description="Customers only: the account they may see.")


def _development_users() -> list[ConsoleUser]:
    def user(username: str, name: str, roles: list[str], account: str | None = None) -> ConsoleUser:
        return ConsoleUser(
            username=username, name=name, password_hash=DEV_PASSWORD_HASH, roles=roles, account_number=account
        )

    return [
        user("jane", "Jane Smith", ["customer_executive"]),
        user("rick", "Rick Recovery", ["recovery_executive"]),
        user("bill", "Bill Manager", ["billing_manager"]),
        user("admin", "Ada Admin", ["admin"]),
        user("john", "John Doe", ["customer"], "WU-10001"),
    ]


class ConsoleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore", populate_by_name=True)

    service_name: str = "console"
    http_port: int = Field(default=8100, ge=1, le=65535)

    users: list[ConsoleUser] = Field(
        default_factory=_development_users,
        description="Development sign-ins (JSON list). Every default user's password is `paydesk`: set your own, "
        "or an OIDC issuer, anywhere but a laptop.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="Production: the OIDC provider that signs users in. When set, the development user list is "
        "off (`POST /session` answers 404) and the pages send users to this issuer instead.",
        examples=["https://login.example-utility.com/realms/paydesk"],
    )
    oidc_client_id: str = Field(default="paydesk-console", description="The console's client id at the provider.")
    token_minutes: int = Field(default=30, ge=1, le=12 * 60, description="Lifetime of a sign-in token.")

    # Where the browser finds each service (the pages call them directly, with the user's token).
    payments_url: str = Field(default="http://127.0.0.1:8102")
    credit_notes_url: str = Field(default="http://127.0.0.1:8103")
    receipts_url: str = Field(default="http://127.0.0.1:8104")
    kpi_url: str = Field(default="http://127.0.0.1:8105")
    collections_url: str | None = Field(
        default="http://127.0.0.1:8106",
        description="The collections service; unset (empty), its pages say it is not deployed here.",
    )

    # How the utility shows money and dates.
    currency: str = Field(default="USD", min_length=3, max_length=3)
    locale: str = Field(default="en-US", description="BCP 47 locale for number and date formatting.")
    time_zone: str = Field(default="UTC", examples=["America/Chicago"])
    date_style: str = Field(default="medium", pattern="^(short|medium|long)$", description="e.g. Apr 20, 2025.")
    max_page_size: int = Field(default=20, ge=5, le=200, description="Rows per page in the lists.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
