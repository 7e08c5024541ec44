from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ReceiptsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIPTS_", extra="ignore", populate_by_name=True)

    service_name: str = "receipts"
    http_port: int = Field(default=8104, ge=1, le=65535)

    # The letterhead printed at the top of every document.
    utility_name: str = Field(default="Cityville Water & Power", min_length=1)
    utility_address: str = Field(default="1 Utility Plaza, Cityville")
    utility_contact: str = Field(default="(555) 000-1000 · billing@cityville-utility.example")
    # strftime pattern of dates on documents, e.g. "Apr 20, 2025"; times are shown in `timezone`.
    date_format: str = Field(default="%b %d, %Y", min_length=2)
    timezone: str = Field(default="UTC", description="IANA zone in which document dates are shown.")

    # The render worker (commands.py): documents rendered per pass, and the rest between passes when none wait.
    render_batch: int = Field(default=32, ge=1, le=500)
    # 1 s: a GET renders on demand meanwhile, and at 0.1 s an idle receipts process ran ten reads a second for nothing.
    render_idle_seconds: float = Field(default=1.0, gt=0, le=60)
    # The longest a pass waits while the event consumers are behind (0: never waits): a burst is applied first.
    render_yield_seconds: float = Field(default=2.0, ge=0, le=60)
    # Render processes beside the service (0: render in a thread of the service itself).
    render_processes: int = Field(default=1, ge=0, le=16)
    # How much lower than the service the render processes run (os.nice): they take only the CPU the hot path leaves.
    render_niceness: int = Field(default=10, ge=0, le=19)
    # Render processes in Linux's idle scheduling class: they run only on a core nothing else wants.
    render_idle_only: bool = True
