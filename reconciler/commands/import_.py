"""`reconciler import`: a complete desired-state file for what is live on one instance.

    reconciler import --node HOST:PORT [--tls-ca F --tls-cert F --tls-key F --tls-server-name N]
                      --admin-user U --admin-secret-env VAR [--name N] [--out FILE [--force]]
    reconciler import --instance N -f FILE [--out FILE [--force]]

The work (reading the instance, the shortest rules, writing the file) is importer.py's.
"""

from __future__ import annotations

import argparse
import sys

from .. import importer


def run(args: argparse.Namespace) -> int:
    request = importer.Request(
        nodes=tuple(args.node or ()),
        admin_user=args.admin_user,
        admin_secret_env=args.admin_secret_env,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
        name=args.name,
        file=args.file,
        instance=args.instance,
        out=getattr(args, "out", None),
        force=args.force,
        allow_exec=getattr(args, "allow_exec", False),
    )
    text = importer.run(request)
    if request.out:
        print(f"reconciler: wrote {request.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
