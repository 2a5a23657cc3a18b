"""Shared test support: real backends, a syslog receiver, proxy processes and raw HTTP clients.

Import as `from support.backends import Backend` (tests/conftest.py puts tests/ on sys.path).
"""
