"""The trio driver: sessions, connections, the registry and the manager."""
