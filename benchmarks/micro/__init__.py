"""Micro-benchmarks: single mechanisms timed in isolation (no HTTP, no server)."""
