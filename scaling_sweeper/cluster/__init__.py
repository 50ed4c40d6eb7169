"""Cluster layer: reaching Ray. The connection (an embedded local cluster or an existing one,
token auth), `sweeper cluster start/stop` (a loopback cluster of this machine) and Ray Jobs
(`sweeper submit`)."""
