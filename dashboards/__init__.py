"""The relay's Grafana dashboard as code (``generate.py``) and its picture (``render.py``).

The Helm chart ships the generated JSON (``helm/lynx-relay/files/dashboard.json``); the tests in
``tests/observability`` check it against the generator and against a real Prometheus.
"""
