"""Operator and developer tools that are not part of the server (see tools/README.md).

Nothing here is imported by the server; every tool is a ``python -m tools.<name>`` command with
``--help``, reading a running server from the outside (its shared memory, read only; its process
tree) or cleaning up after dead ones.
"""
