"""reconciler: declarative access control for Redis and Valkey."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reconciler")  # pyproject.toml's version, the single source
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
