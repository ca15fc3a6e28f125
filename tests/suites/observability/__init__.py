"""Metrics, dashboards and alert rules, up to a real Prometheus."""
