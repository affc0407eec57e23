"""`make fuzz`: schemathesis against a VORA QA names, or one it starts (python -m fuzz --help)."""
