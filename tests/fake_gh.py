"""A stand-in for the `gh` CLI in tests (GitHub is not reachable from here): the three
`gh api` calls examples/pr-plan.yml makes, on comments kept in the JSON file $FAKE_GH_STATE.

Behaviour follows GitHub's REST reference (docs.github.com/rest/issues/comments, API version
2022-11-28) and `gh api --help` (gh 2.x):
- GET  repos/{owner}/{repo}/issues/{n}/comments -> the issue's comments, oldest first;
  `--jq` filters them (only the `select(.body | startswith("...")) | .id` form is understood).
- POST repos/{owner}/{repo}/issues/{n}/comments with body -> 201, a new comment.
- PATCH repos/{owner}/{repo}/issues/comments/{id} with body -> 200, the comment replaced.
- A body over 65,536 characters is refused: 422 "body is too long (maximum is 65536 characters)".
- `-F body=@FILE` reads the value from FILE.
"""

from __future__ import annotations

import json
import os
import re
import sys

LIMIT = 65536


def main(argv: list[str]) -> int:
    assert argv[0] == "api", argv
    state_path = os.environ["FAKE_GH_STATE"]
    state = {"comments": [], "calls": []}
    if os.path.exists(state_path):
        with open(state_path) as fh:
            state = json.load(fh)
    method, path, jq, body = "GET", "", None, None
    args = iter(argv[1:])
    for a in args:
        if a == "--method":
            method = next(args)
        elif a == "--jq":
            jq = next(args)
        elif a == "--paginate":
            pass
        elif a == "-F":
            key, value = next(args).split("=", 1)
            assert key == "body"
            body = value
            if value.startswith("@"):
                with open(value[1:]) as fh:
                    body = fh.read()
        else:
            path = a
    state["calls"].append([method, path])
    code = 0
    if method == "GET":
        m = re.fullmatch(r"repos/[^/]+/[^/]+/issues/(\d+)/comments", path)
        assert m, path
        comments = [c for c in state["comments"] if c["issue"] == int(m.group(1))]
        if jq is None:
            print(json.dumps(comments))
        else:
            (prefix,) = re.findall(r'startswith\("(.*?)"\)', jq)
            for c in comments:
                if c["body"].startswith(prefix):
                    print(c["id"])
    elif body is not None and len(body) > LIMIT:
        print(f"gh: Validation Failed (HTTP 422): body is too long (maximum is {LIMIT} characters)", file=sys.stderr)
        code = 1
    elif method == "POST":
        m = re.fullmatch(r"repos/[^/]+/[^/]+/issues/(\d+)/comments", path)
        assert m and body is not None, path
        new = {"id": 1000 + len(state["comments"]), "issue": int(m.group(1)), "body": body}
        state["comments"].append(new)
        print(json.dumps(new))
    elif method == "PATCH":
        m = re.fullmatch(r"repos/[^/]+/[^/]+/issues/comments/(\d+)", path)
        assert m and body is not None, path
        (comment,) = [c for c in state["comments"] if c["id"] == int(m.group(1))]
        comment["body"] = body
        print(json.dumps(comment))
    with open(state_path, "w") as fh:
        json.dump(state, fh)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
