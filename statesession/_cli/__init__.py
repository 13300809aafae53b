"""The ``statesession`` command: ``main`` (in main.py) parses the command line (parser.py)
and runs one command, each in its own module: serve.py, sessions.py, replay.py and
diagram.py; demo.py is the app ``serve`` runs by default."""

from .main import main as main

__all__ = ["main"]
