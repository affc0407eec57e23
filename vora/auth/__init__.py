"""Who the caller is: bearer tokens, their verification, the development key."""
