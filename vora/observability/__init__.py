"""Logs and metrics: what operators read."""
