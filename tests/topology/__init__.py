"""Tests of the process harness, and of VORA end to end on Redis Cluster, Sentinel, a failing Redis and behind nginx."""
