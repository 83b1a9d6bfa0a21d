"""Support for testing weightstore and code built on it: servers to test against.

Nothing here is imported by the library itself.
"""
