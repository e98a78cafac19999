"""`reconciler import`: a complete desired-state file for what is live on one instance.

    reconciler import --node HOST:PORT [--tls-ca F --tls-cert F --tls-key F --tls-server-name N]
                      --admin-user U --admin-secret-env VAR [--name N] [--out FILE [--force]]
    reconciler import --instance N -f FILE [--out FILE [--force]]

The work (reading the instance, the shortest rules, the file written) is importer.py's.
"""

from __future__ import annotations

import argparse

from ..importer import run as import_instance

run = import_instance  # the file to be: importer.run still takes the parsed arguments
