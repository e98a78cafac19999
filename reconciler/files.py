"""Reading a file the user names (the desired state, a secret file): a regular file, bounded in size."""

from __future__ import annotations

import os
import stat


class NotRegular(Exception):
    """The path is a directory, a device, a FIFO... (reading it could block or mean nothing)."""


class TooLarge(Exception):
    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def read_regular(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of regular file `path` and its stat. Raises OSError (FileNotFoundError included)
    as the system does, NotRegular, or TooLarge when it holds more than `limit` bytes."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(path)
    if st.st_size > limit:
        raise TooLarge(st.st_size)
    with open(path, "rb") as fh:
        return fh.read(limit + 1), st
