"""The session lifecycle: the chart, its interpreters, replay and diagrams (sans-IO)."""
