"""The client: its protocol state, backoff, supervisor and trio client."""
