"""Test base classes shipped with the library, so every backend passes the same suite."""

from wmrl.testing.world_model import WorldModelTestCase

__all__ = ["WorldModelTestCase"]
