"""What every Paydesk service needs and no service owns: contracts, money, wiring, telemetry, auth."""
