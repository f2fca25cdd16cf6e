"""Tests of the dashboard, the alert rules and the runbook: promtool and a real Prometheus."""
