"""The ``statesession`` command."""

from .main import main as main

__all__ = ["main"]
