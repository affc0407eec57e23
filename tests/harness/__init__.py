"""Process harness for tests: free loopback ports, real Redis topologies and nginx, always cleaned up."""

from .devauth import DevAuth, DevAuthUnavailable
from .nginx import Nginx, NginxUnavailable, ensure_nginx
from .ports import free_port, free_ports, port_is_free
from .procs import ManagedProcess, live_processes
from .redis_procs import RedisCluster3, RedisSentinel, RedisSentinelSet, RedisServer
from .wait import WaitTimeout, port_accepts, wait_for

__all__ = [
    "DevAuth",
    "DevAuthUnavailable",
    "ManagedProcess",
    "Nginx",
    "NginxUnavailable",
    "RedisCluster3",
    "RedisSentinel",
    "RedisSentinelSet",
    "RedisServer",
    "WaitTimeout",
    "ensure_nginx",
    "free_port",
    "free_ports",
    "live_processes",
    "port_accepts",
    "port_is_free",
    "wait_for",
]
