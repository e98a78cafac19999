"""reconciler: declarative access control for Redis and Valkey."""

__version__ = "0.1.0"
