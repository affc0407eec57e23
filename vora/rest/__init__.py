"""The client API (spec/vora.yaml): its app, its handlers, its fast path and the web console."""
