"""Process harness for tests: free loopback ports, real Redis topologies and nginx, always cleaned up."""

from testbed.ports import free_port, free_ports, port_is_free
from testbed.procs import ManagedProcess, live_processes
from testbed.redis_procs import RedisCluster3, RedisSentinel, RedisSentinelSet, RedisServer
from testbed.wait import WaitTimeout, port_accepts, wait_for

from .devauth import DevAuth, DevAuthUnavailable
from .nginx import Nginx, NginxUnavailable, ensure_nginx, nginx_or_skip

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
    "nginx_or_skip",
    "port_accepts",
    "port_is_free",
    "wait_for",
]
