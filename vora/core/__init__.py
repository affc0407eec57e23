"""Shared by every layer: settings, the clock, identities, the event catalogue, error shapes."""
