"""KPI: aggregates collection figures from events and serves them to dashboards."""
