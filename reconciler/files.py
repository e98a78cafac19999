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
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegular(path)  # not even opened: opening a device can do something
    # Checked again on what was opened, which can't block: the path may have been replaced by a
    # FIFO since (opening one for reading waits for a writer, for ever).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(path)
        if st.st_size > limit:
            raise TooLarge(st.st_size)
        data = fh.read(limit + 1)
        if len(data) > limit:  # it grew after it was measured
            raise TooLarge(len(data))
        return data, st
