"""The math-verify child process (run as a script; never imported by the env).

Protocol: one JSON object per line. The first line out is ``{"ready": true}`` (or
``{"ready": false, "error": ...}`` when math-verify is missing); then each request
``{"gold": str, "pred": str, "timeout": int}`` gets ``{"equal": bool}``. Only the
LaTeX extractor is used: math-verify's plain-expression extractor calls sympy's
``parse_expr``, which evaluates Python, so it is never enabled here.
"""

import json
import os
import sys


def main() -> None:
    # This folder is on sys.path as the script's own; its modules must not shadow any library's.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    # Keep the protocol on a private copy of stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        from math_verify import LatexExtractionConfig, parse, verify
    except Exception as err:  # report any import failure to the parent
        out.write(json.dumps({"ready": False, "error": repr(err)}) + "\n")
        return
    config = [LatexExtractionConfig()]
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            limit = max(1, int(request["timeout"]))
            gold = parse(f"${request['gold']}$", config, parsing_timeout=limit)
            pred = parse(f"${request['pred']}$", config, parsing_timeout=limit)
            equal = bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=limit)
        except Exception:  # any failure to compare is "not equal"
            equal = False
        out.write(json.dumps({"equal": equal}) + "\n")


if __name__ == "__main__":
    main()
