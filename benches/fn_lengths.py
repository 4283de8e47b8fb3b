#!/usr/bin/env python3
"""Function length distribution of a Rust source tree (issue 13's figures).

Counts each `fn` with a body from its `fn` line to its closing brace, inclusive.
Skips `#[cfg(test)]` items (the `mod tests` blocks). Nested fns count on their own
and inside their parent. Usage:

    python3 benches/fn_lengths.py [src] [--over N] [--list N] [--exclude GLOB ...] [--max N]

Prints the distribution and the longest functions (at most N of those over `--over`).
With `--max N` it exits 1 when a function over N lines is not in `ALLOWED`, or when an
`ALLOWED` entry is no longer over N (so the list stays true); the integration test
`shape` runs it with `--max 80` (ARCHITECTURE.md, "Code shape").
"""
import fnmatch
import re
import statistics
import sys
from pathlib import Path


# Functions allowed over `--max` lines: "path:name" -> why (say the same in
# ARCHITECTURE.md's "Code shape"). Only exhaustive matches that do not split by what their
# arms have in common belong here; today there are none.
ALLOWED = {}


def strip(text):
    """Blanks out comments, strings and chars, keeping newlines and offsets."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r(#*)"', text[i:i + 40]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def match_brace(s, open_at):
    depth = 0
    for j in range(open_at, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(s) - 1


def functions(path):
    text = path.read_text()
    s = strip(text)
    test_ranges = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", s):
        test_ranges.append((m.start(), match_brace(s, m.end() - 1)))
    line_of = lambda off: s.count("\n", 0, off) + 1
    for m in re.finditer(r"\bfn\s+(\w+)", s):
        if any(a <= m.start() <= b for a, b in test_ranges):
            continue
        j = m.end()
        depth = 0
        while j < len(s):  # the signature ends at `{` (body) or `;` (no body)
            ch = s[j]
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth -= 1 if not (ch == ">" and s[j - 1] == "-") else 0
            elif ch == ";" and depth <= 0:
                j = -1
                break
            elif ch == "{" and depth <= 0:
                break
            j += 1
        if j < 0 or j >= len(s):
            continue
        end = match_brace(s, j)
        start_line = line_of(m.start())
        yield m.group(1), start_line, line_of(end) - start_line + 1


def main(argv):
    root, over, listn, excludes, limit = "src", 60, 15, [], None
    args = iter(argv)
    for a in args:
        if a in ("--over", "--list", "--exclude", "--max"):
            v = next(args, None)
            if v is None:
                sys.exit(f"fn_lengths: {a} needs a value")
            if a == "--exclude":
                excludes.append(v)
            elif a == "--over":
                over = int(v)
            elif a == "--list":
                listn = int(v)
            else:
                limit = int(v)
        else:
            root = a
    rows = []
    for p in sorted(Path(root).rglob("*.rs")):
        if any(fnmatch.fnmatch(str(p), g) for g in excludes):
            continue
        for name, line, n in functions(p):
            rows.append((n, f"{p}:{line}", name))
    if not rows:
        sys.exit(f"fn_lengths: no Rust functions under {root!r}")
    lens = sorted(r[0] for r in rows)
    p90 = lens[int(0.9 * (len(lens) - 1))]
    print(f"functions {len(lens)}  median {statistics.median(lens):g}  p90 {p90}  "
          f"max {lens[-1]}  over60 {sum(n > 60 for n in lens)}  over80 {sum(n > 80 for n in lens)}")
    for n, where, name in sorted(rows, reverse=True)[:listn]:
        if n > over:
            print(f"{n:5} {where} {name}")
    if limit is not None:
        return check_limit(rows, limit)
    return 0


def check_limit(rows, limit):
    """1 when a function over `limit` is not allowed or an allowance is stale."""
    long = [(f"{where.rsplit(':', 1)[0]}:{name}", n, where, name)
            for n, where, name in rows if n > limit]
    bad = 0
    for key, n, where, name in sorted(long):
        if key not in ALLOWED:
            print(f"fn_lengths: {where} {name} is {n} lines (over {limit}): "
                  "split it, or add it to ALLOWED with the reason", file=sys.stderr)
            bad = 1
    for key in sorted(set(ALLOWED) - {k for k, *_ in long}):
        print(f"fn_lengths: ALLOWED lists {key}, which is no longer over {limit}: remove it",
              file=sys.stderr)
        bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
