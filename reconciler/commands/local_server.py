"""`reconciler local-server start|stop|status`: a throwaway server to try the tool on
(reconciler/local_server.py says what it runs and where its files are)."""

from __future__ import annotations

import argparse

from .. import local_server


def run(args: argparse.Namespace) -> int:
    if args.local_command == "start":
        s = local_server.start(args.port, binary=args.server)
        print(f"{s.label} is running on {s.address} (pid {s.pid}), fresh: one user, `default on nopass`.")
        print(f"Its files: {s.folder}. Stop it with: reconciler local-server stop{local_server.port_arg(s.port)}")
        return 0
    if args.local_command == "stop":
        s = local_server.stop(args.port)
        print(f"Stopped the {s.label} on {s.address} (pid {s.pid}) and removed {s.folder}.")
        return 0
    running = local_server.status(args.port)
    if running is None:
        print(f"No local server on 127.0.0.1:{args.port}.")
        return 1
    print(f"{running.label} is running on {running.address} (pid {running.pid}); its files: {running.folder}")
    return 0
