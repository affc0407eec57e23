"""The server API (spec/vora-server.yaml) for the telephony side: its app, handlers and rules."""
