"""Handlers of spec/vora-server.yaml, one module per tag; each operationId names its function."""
