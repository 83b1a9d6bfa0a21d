"""Support for testing weightstore and code built on it: servers to test against (moto's S3,
a fault-injecting HTTP proxy), a fault-injecting object backend, and the ObjectBackend
conformance suite (which needs pytest and hypothesis, the ``test`` extra).

Nothing here is imported by the library itself.
"""
