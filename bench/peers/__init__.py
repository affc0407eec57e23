"""The peers VORA is measured beside (Socket.IO 4 on Node with Redis, a plain ws relay) and their Node load tools."""
