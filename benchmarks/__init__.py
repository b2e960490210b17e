"""Schooner's benchmark harness: workloads, the inline baseline server, and `make bench`."""
