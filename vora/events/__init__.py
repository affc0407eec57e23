"""Events the telephony side publishes: checked against the catalogue, appended, announced."""
