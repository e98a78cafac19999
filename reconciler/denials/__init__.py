"""`reconciler denials`: what the servers refused (ACL LOG), merged per user, reason and object,
and tied to the changes that caused it.

    model.py    the data: each node's log as read (providers fill it) and the merged report
    merge.py    pure: node logs -> per-user denials, lossy logs, known users vs probing names
    changes.py  the audit log's permission and token changes, read at the edge
    tie.py      pure: which change a denial follows ("since <change> at <time>")
"""
