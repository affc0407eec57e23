"""The WebSocket event channel: one hub per worker fanning events out to its sockets."""
