"""Connexion handlers, one module per spec tag; each operationId names its function."""
