"""Redis storage for VORA: key layout, scripts and the stores built on them."""
