"""Tests of the process harness and of the store on Redis Cluster, Sentinel and behind nginx."""
