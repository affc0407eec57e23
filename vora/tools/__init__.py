"""Tools the CLI runs for API owners: checking the specs against the code."""
