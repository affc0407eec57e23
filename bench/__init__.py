"""`make bench`: measure VORA against its targets, each figure next to a baseline measured in the same run."""
