"""The daemon process: aegisd's socket server, its broker and approvals, its audit log.

Everything here runs inside ``aegisd`` (``main`` is its entry point, ``daemon.Daemon`` the
object that wires listener, connections, broker, audit and policy together); aegisctl reads
some of it (the audit chain, the instance lock, peer matching) but no client imports it.
This package re-exports nothing: import the module that owns a thing.
"""
