"""Where passivated sessions and the event log go: the port and its backends."""
