"""Run a command next to a DNS server that takes every query and never answers.

    silent_resolver.py COMMAND [ARG...]

Meant for new user, mount and network namespaces (`unshare -Urnm`) whose /etc/resolv.conf says
`nameserver 127.0.0.1`: it binds UDP and TCP port 53 there, hands both sockets to COMMAND (exec,
so nothing else reads them) and the queries pile up unanswered -- no "connection refused" that
would end the lookup at once, the resolver's own timeouts run out instead.
"""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 53))
    tcp.listen(64)
    for sock in (udp, tcp):
        sock.set_inheritable(True)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
