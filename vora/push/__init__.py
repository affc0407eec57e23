"""Push wake-ups of held-up sessions: the rules, the webhooks and the worker that sends them."""
