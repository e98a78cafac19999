"""The denials report as text, Markdown (within a comment budget, like plans) and JSON.

Names, keys and channels come from whoever talked to the server, so every one is shown escaped
when it holds anything but plain characters: a key name must not be able to move the cursor,
close a code fence or open HTML in a comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..acl.describe import command_label
from ..denials.merge import when
from ..denials.model import Denial, DenialReport, InstanceDenials
from . import markdown
from .environment import environment
from .markdown import Budget, Layout, Section
from .view import Colors, node_header

_MD_PUNCT = re.compile(r"[\\*_\[\]()#|!~]")
PLAIN = re.compile(r"[A-Za-z0-9_.:*@|/+=,#$%&^~?!()\[\]{}-]{1,120}")
SHOWN_CHARS = 120
NODES_SHOWN = 4
CAUSES_SHOWN = 50  # Markdown: the head (never cut) stays small
REASON_WORDS = {"command": "command", "key": "key", "channel": "channel"}
CONTEXT_WORDS = {"multi": "in MULTI/EXEC", "lua": "in a script", "module": "from a module"}


def shown(text: str) -> str:
    """`text` as is when plain, else quoted with every unusual character escaped (and cut)."""
    if PLAIN.fullmatch(text):
        return text
    cut = text[:SHOWN_CHARS]
    body = json.dumps(cut, ensure_ascii=True)
    for ch, esc in (("`", "\\u0060"), ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        body = body.replace(ch, esc)
    if len(text) > SHOWN_CHARS:
        body += f"… ({len(text.encode('utf-8', 'surrogateescape')):,} bytes)"
    return body


def _md_escape(match: re.Match[str]) -> str:
    return "\\" + match.group(0)


def inert(text: str) -> str:
    """Text from a file or a server that is not a name (a change's words from the audit log, a
    server's error), kept readable but inert: a tampered record or a server that answers HTML
    must not be able to close the Markdown fence, open HTML or move the cursor either."""
    if text.isprintable() and not any(ch in text for ch in "`<>&"):
        return text  # "… and 73 more", "sha256:5e884898…" as they are
    return "".join(ch if ch.isprintable() and ch not in "`<>&" else f"\\u{ord(ch):04x}" for ch in text)


def _object(d: Denial) -> str:
    if d.reason == "command":
        return f"command {command_label(d.object) if PLAIN.fullmatch(d.object) else shown(d.object)}"
    return f"{REASON_WORDS.get(d.reason, shown(d.reason))} {shown(d.object)}"


def _times(d: Denial) -> str:
    last = when(d.last)
    if d.first is None:
        return f"last {last}"
    first = when(d.first)
    if first == last:
        return first
    return f"{first} .. {last[11:] if first[:10] == last[:10] else last}"


def _nodes(d: Denial) -> str:
    parts = [f"{a} ({n:,})" for a, n in d.nodes[:NODES_SHOWN]]
    more = f" and {len(d.nodes) - NODES_SHOWN} more" if len(d.nodes) > NODES_SHOWN else ""
    return "on " + ", ".join(parts) + more


def _clients(d: Denial) -> str:
    if not d.clients:
        return ""
    names = f" ({', '.join(shown(n) for n in d.client_names[:3])})" if d.client_names else ""
    return "from " + ", ".join(shown(c) for c in d.clients[:NODES_SHOWN]) + names


def _times_word(n: int) -> str:
    return f"{n:,} time{'s' if n != 1 else ''}"


def cause_line(d: Denial) -> list[str]:
    """The line (and its "likely" reason) tying a denial to a change."""
    assert d.cause is not None
    at = when(d.cause.time)
    words = inert(d.cause.words)
    if d.reason == "auth":
        head = f"{d.instance} {shown(d.user)}: {d.count:,} failed AUTH"
        src = _clients(d)
        return [f"! {head}{' ' + src if src else ''} since {words} at {at}", f"    likely: {d.cause.likely}"]
    return [f"! {d.instance} {shown(d.user)}: {_object(d)} refused {_times_word(d.count)} since \"{words}\" at {at}"]


def _row(label: str, d: Denial, extra: str = "") -> str:
    parts = [f"    {label:<28} {d.count:>7,}  {_times(d)}"]
    ctx = ", ".join(CONTEXT_WORDS[c] for c in d.contexts if c in CONTEXT_WORDS)
    if ctx:
        parts.append(ctx)
    if extra:
        parts.append(extra)
    parts.append(_nodes(d))
    return "  ".join(parts)


def _instance_header(inst: InstanceDenials) -> str:
    if inst.unavailable:
        return f"Instance {inst.name}: ACL LOG is not available: {inst.unavailable}"
    if inst.error:
        return f"Instance {inst.name}: not read: {inert(inst.error)}"
    return f"Instance {inst.name} ({node_header(inst.nodes)})"


def _instance_lines(inst: InstanceDenials, colors: Colors) -> list[str]:
    if inst.unavailable or inst.error:
        return []
    lines: list[str] = []
    refused = [d for d in inst.denials if d.reason != "auth"]
    auth = [d for d in inst.denials if d.reason == "auth"]
    user = None
    for d in refused:
        if d.user != user:
            user = d.user
            lines.append(f"  user {shown(d.user)}" + ("" if d.declared else "  (not in the file)"))
        lines.append(_row(_object(d), d, _clients(d) if not d.declared else ""))
        if d.cause is not None:
            lines.append(colors.paint("!", f"      ! since \"{inert(d.cause.words)}\" at {when(d.cause.time)}"))
    if auth:
        lines.append("  failed AUTH")
        for d in auth:
            if d.probing:
                kind = "probing: not a user of the file"
            elif not d.declared:
                kind = "a user the file removed"
            else:
                kind = "declared user: a wrong or old token"
            lines.append(_row(shown(d.user), d, f"{_clients(d)}  {kind}".strip()))
            if d.cause is not None:
                lines.append(colors.paint("!", f"      ! likely since {inert(d.cause.words)} at {when(d.cause.time)}: {d.cause.likely}"))
    if not inst.denials:
        # A node whose log was not read is no evidence of no denials: say what the zero covers.
        read = [n for n in inst.nodes if not n.error]
        if len(read) == len(inst.nodes):
            lines.append("  no denials")
        elif read:
            lines.append(f"  no denials on the {len(read)} node{'s' if len(read) != 1 else ''} read")
    for n in inst.nodes:
        if n.error:
            lines.append(colors.paint("!", f"  ! {n.address}: not read: {inert(n.error)}"))
        elif n.lossy:
            lines.append(colors.paint("!", f"  ! {n.address}: lossy: {n.lossy}"))
        if n.coverage:
            lines.append(f"  note {n.address}: {n.coverage}")
        if n.duplicate_of:
            lines.append(f"  note {n.address}: the same server as {n.duplicate_of}, counted there")
    if inst.approximate:
        lines.append(f"  note: {inst.approximate}")
    return lines


def headline(report: DenialReport) -> str:
    """"52 denials on 2 instances; 2 caused by a change, 1 probing name, 1 lossy log" or "no denials"."""
    denials = report.denials
    if not denials:
        parts = ["no denials"]
    else:
        n = sum(d.count for d in denials)
        insts = len({d.instance for d in denials})
        parts = [f"{n:,} denial{'s' if n != 1 else ''} on {insts} instance{'s' if insts != 1 else ''}"]
    caused = len(report.caused)
    if caused:
        parts.append(f"{caused} caused by a change")
    probing = len({d.user for d in denials if d.probing})
    if probing:
        parts.append(f"{probing} probing name{'s' if probing != 1 else ''}")
    lossy = len(report.lossy)
    if lossy:
        parts.append(f"{lossy} lossy log{'s' if lossy != 1 else ''}")
    if report.errors:
        parts.append(f"{len(report.errors)} not read")
    return "; ".join(parts)


def _summary(report: DenialReport) -> list[str]:
    denials = report.denials
    refused = {r: sum(d.count for d in denials if d.reason == r) for r in dict.fromkeys(d.reason for d in denials if d.reason != "auth")}
    auth = sum(d.count for d in denials if d.reason == "auth")
    probing = sum(d.count for d in denials if d.probing)
    window = f" in the last {_duration(report.since)}" if report.since is not None else ""
    if denials:
        parts = []
        if refused:
            parts.append(f"{sum(refused.values()):,} refused (" + ", ".join(f"{r} {n:,}" for r, n in refused.items()) + ")")
        if auth:
            parts.append(f"{auth:,} failed AUTH" + (f" ({probing:,} probing)" if probing else ""))
        out = [f"Denials{window}: {', '.join(parts)}; {len(report.caused)} caused by a change."]
    elif report.errors:
        out = [f"No denials{window} in the logs that were read; {len(report.errors)} not read (see above)."]
    else:
        out = [f"No denials{window}."]
    out.append(f"Changes: {report.audit}" if report.audit else "")
    out += list(report.notes)
    return [line for line in out if line]


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass
class ReportView:
    title: str
    caused: list[str]
    instances: list[Section]
    summary: list[str]
    rows: list[dict[str, int | str]] = field(default_factory=list)


def build_view(report: DenialReport, colors: Colors, title: str) -> ReportView:
    caused = [line for d in report.caused for line in cause_line(d)]
    sections = [Section(i.name, _instance_header(i), _instance_lines(i, colors)) for i in report.instances]
    rows = [
        {
            "name": i.name,
            "refused": sum(d.count for d in i.denials if d.reason != "auth"),
            "auth": sum(d.count for d in i.denials if d.reason == "auth"),
            "probing": len({d.user for d in i.denials if d.probing}),
            "caused": sum(1 for d in i.denials if d.cause is not None),
            "lossy": sum(1 for n in i.nodes if n.lossy),
            "note": "ACL LOG not available" if i.unavailable else ("not read" if i.error or any(n.error for n in i.nodes) else ""),
        }
        for i in report.instances
    ]
    return ReportView(title=title, caused=[colors.paint("!", c) if c.startswith("!") else c for c in caused], instances=sections, summary=_summary(report), rows=rows)


def render_text(report: DenialReport, *, color: bool = False, title: str = "") -> str:
    view = build_view(report, Colors(color), title or f"reconciler denials: {headline(report)}")
    return environment().get_template("denials.txt.j2").render(view=view)


def _row_item(line: str) -> bool:
    return line.startswith("  ") and not line.startswith("      ") and not line.startswith("  note")


def _omitted(section: Section, kept: int, budget: Budget) -> str:
    rows = sum(1 for line in section.lines if line.startswith("    ") and not line.startswith("      "))
    shown_rows = sum(1 for line in section.lines[:kept] if line.startswith("    ") and not line.startswith("      "))
    where = budget.full_plan or DENIALS_LAYOUT.where
    return (
        f"> **{section.name}: {rows - shown_rows:,} of {rows:,} rows not shown** "
        f"({len(section.lines) - kept:,} lines left out to keep this comment under {budget.max_chars:,} characters). "
        f"Full report: {where}"
    )


DENIALS_LAYOUT = Layout(
    fence="text",
    starts_item=_row_item,
    omitted=_omitted,
    whole="Full report",
    where="`reconciler denials -f FILE --format json`",
)


def render_markdown(report: DenialReport, *, title: str = "", budget: Budget | None = None) -> str:
    budget = budget or Budget()
    view = build_view(report, Colors(False), title or f"reconciler denials: {headline(report)}")
    if len(view.caused) > CAUSES_SHOWN:
        more = len(report.caused) - sum(1 for c in view.caused[:CAUSES_SHOWN] if c.startswith("!"))
        view.caused = view.caused[:CAUSES_SHOWN] + [f"… and {more:,} more (the full report lists them all)"]
    head = environment().get_template("denials.md.j2").render(view=view)
    sections = [s for s in view.instances if s.lines]
    unavailable = [s.header for s in view.instances if not s.lines]
    if unavailable:
        # Outside any fence: Markdown's own punctuation escaped too (a server's error text).
        head += "\n" + "".join("- " + _MD_PUNCT.sub(_md_escape, line) + "\n" for line in unavailable)
    return markdown.fit(head, sections, budget, DENIALS_LAYOUT)


def render_json(report: DenialReport) -> str:
    # ASCII: a name that is not UTF-8 (kept with surrogateescape) must still print.
    return json.dumps(report.to_json(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def render(report: DenialReport, fmt: str, *, color: bool = False, title: str = "", budget: Budget | None = None) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "markdown":
        return render_markdown(report, title=title, budget=budget)
    return render_text(report, color=color, title=title)
