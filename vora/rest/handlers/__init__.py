"""Handlers of spec/vora.yaml, one module per tag; each operationId names its function."""
