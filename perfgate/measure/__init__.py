"""Measuring one server: the workload, the client and load generator, per-request
records, metrics, validity, the /metrics cross-check, and ``bench`` (one workload against one
server)."""
