"""Session rules: setup, subscriptions, logout, socket admission."""
