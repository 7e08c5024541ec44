"""The five Paydesk services; each owns one Postgres schema and talks to the others only through Kafka."""
