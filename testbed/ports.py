"""Pick free TCP ports on the loopback interface for the processes a test starts."""

from __future__ import annotations

import socket
import threading

HOST = "127.0.0.1"

# Redis Cluster listens on PORT and on PORT + 10000 (the cluster bus), so both must be free.
CLUSTER_BUS_OFFSET = 10000
MAX_CLUSTER_PORT = 65535 - CLUSTER_BUS_OFFSET  # 55535: the bus port must stay a valid port number.

_MAX_ATTEMPTS = 200
_lock = threading.Lock()
_handed_out: set[int] = set()  # never hand out one port twice in one test run


def port_is_free(port: int, host: str = HOST) -> bool:
    """Tell whether a TCP listener could bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def free_port(*, cluster_bus: bool = False, host: str = HOST) -> int:
    """Return a loopback port that is free now (and, for cluster nodes, whose bus port is free too)."""
    with _lock:
        for _ in range(_MAX_ATTEMPTS):
            port = _ephemeral_port(host)
            if port in _handed_out:
                continue
            if cluster_bus and (port >= MAX_CLUSTER_PORT or not port_is_free(port + CLUSTER_BUS_OFFSET, host)):
                continue
            if cluster_bus and port + CLUSTER_BUS_OFFSET in _handed_out:
                continue
            _handed_out.add(port)
            if cluster_bus:
                _handed_out.add(port + CLUSTER_BUS_OFFSET)
            return port
    raise RuntimeError(f"found no free loopback port after {_MAX_ATTEMPTS} attempts")


def free_ports(count: int, *, cluster_bus: bool = False, host: str = HOST) -> list[int]:
    """Return count distinct free loopback ports (see free_port)."""
    if count < 0:
        raise ValueError("count must not be negative")
    return [free_port(cluster_bus=cluster_bus, host=host) for _ in range(count)]
