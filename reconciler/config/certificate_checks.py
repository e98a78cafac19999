"""Semantic checks of `certificates:` (subjects, cert_file chains and expiry), for the Builder."""

from __future__ import annotations

from typing import Any

from ..model import (
    Certificate,
    Instance,
)
from .core import (
    BuilderCore,
    as_list,
    as_str,
    parse_subject,
)
from .yamlsrc import Path


class CertificateChecks(BuilderCore):
    def certificates(
        self, user: str, raw: Any, path: Path, user_instances: tuple[str, ...], instances: dict[str, Instance]
    ) -> tuple[Certificate, ...]:
        out: list[Certificate] = []
        seen: dict[tuple, Path] = {}
        cn_instances = [
            n for n in user_instances
            if (auth := instances[n].tls_client_auth) is not None and auth.user_field == "CN"
        ]
        for i, spec in enumerate(as_list(raw)):
            if not isinstance(spec, dict) or not isinstance(spec.get("subject"), str):
                continue
            where = path + (i,)
            subject = spec["subject"]
            parsed = parse_subject(subject)
            if parsed is None:
                self.problem(where + ("subject",), 'expected a subject like "CN=app,OU=payments,O=Acme,C=US"')
            else:
                # Rotation lists one subject twice, each with its own cert_file.
                key = (tuple(sorted(parsed)), self.path_of(spec["cert_file"]) if isinstance(spec.get("cert_file"), str) else None)
                if key in seen:
                    self.problem(where + ("subject",), f"subject listed twice (first at line {self.line(seen[key])})")
                else:
                    seen[key] = where + ("subject",)
                cns = [v for k, v in parsed if k == "CN"]
                if cn_instances:
                    if not cns:
                        self.problem(
                            where + ("subject",),
                            f"subject has no CN, but instance {cn_instances[0]} maps certificates to users by CN",
                        )
                    elif cns[0] != user:
                        self.problem(
                            where + ("subject",),
                            f"CN '{cns[0]}' must equal the username '{user}': instance {cn_instances[0]} "
                            "maps certificates to users by CN (tls_client_auth.user_field: CN)",
                        )
            cert_file = as_str(spec.get("cert_file"))
            info = None
            if cert_file:  # inventory: subject, chain to each instance's CA, clientAuth (certs.check)
                from .. import certs  # imports `cryptography`: only files with cert_file pay for it

                cas = [(n, tls.ca_file) for n in user_instances if (tls := instances[n].tls) and tls.ca_file]
                info, cert_problems = certs.check(self.path_of(cert_file), parsed, cas)
                for msg in cert_problems:
                    self.problem(where + ("cert_file",), msg)
            out.append(
                Certificate(
                    subject=subject,
                    cert_file=self.path_of(cert_file) if cert_file else None,
                    line=self.line(where),
                    info=info,
                )
            )
        return tuple(out)
