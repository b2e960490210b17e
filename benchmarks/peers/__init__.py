"""Peer serving systems (LitServe, Ray Serve) driven by the same harness as Schooner."""
