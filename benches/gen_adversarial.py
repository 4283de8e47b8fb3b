#!/usr/bin/env python3
"""Writes an adversarial policy of about SIZE bytes (default 10 MB) to stdout.

Each kind is a big mistake (or a big odd but valid file) that netqos must reject or accept
within a second (issue 16):
  invalid   one interface of 100,000 leaves (NQ004 too many classes, NQ010 over-reserved)
  dups      classes that all share one name in each group (thousands of NQ duplicates)
  defaults  one group of siblings all marked `default` (NQ050 would name every one)
  deep      classes nested hundreds of thousands deep (NQ040: nests too deeply)
  longline  one class whose `match dst` line lists every address (a multi-megabyte line)
  unknown   hundreds of thousands of unknown statements (NQ041 each)
  badvalues every class with a rate in a wrong unit (NQ diagnostics on every line)
  comments  a valid policy that is mostly comments
  syntaxerr 10 MB of valid classes, then a block never closed at the very end (NQ040)
Usage: gen_adversarial.py KIND [SIZE_BYTES] > bad.nq
"""
import sys

KINDS = ["invalid", "dups", "defaults", "deep", "longline", "unknown", "badvalues", "comments", "syntaxerr"]


def head(rate="100gbit"):
    return ["netqos 1", "", "interface eth0 {", "    rate %s" % rate, ""]


def leaf(name, rate="800kbit", extra=()):
    return ["        class %s {" % name, "            rate %s" % rate] + list(extra) + ["        }"]


def groups(size, make):
    """Groups of 100 leaves from make(g, t) until the text reaches size bytes."""
    out, total, g = [], 0, 0
    while total < size:
        lines = ["    class group%d {" % g, "        rate 90mbit"]
        for t in range(100):
            lines += make(g, t)
        lines += ["        class rest%d {" % g, "            rate 10kbit", "            default", "        }", "    }"]
        total += sum(len(x) + 1 for x in lines)
        out += lines
        g += 1
    return out


def tail():
    return ["    class bulk {", "        rate 1gbit", "        default", "    }", "}"]


def gen(kind, size):
    if kind == "invalid":
        out = head("20gbit")
        out += groups(size, lambda g, t: leaf("t%d-%d" % (g, t), extra=["            match dst 10.%d.%d.%d" % (g // 256 % 256, g % 256, t + 1)]))
        return out + tail()
    if kind == "dups":
        return head() + groups(size, lambda g, t: leaf("t")) + tail()
    if kind == "defaults":
        out = head() + ["    class all {", "        rate 90mbit"]
        n = 0
        while sum(len(x) + 1 for x in out[-4:]) * n < size:
            out += leaf("t%d" % n, extra=["            default"])
            n += 1
        return out + ["    }"] + tail()
    if kind == "deep":
        depth = size // 24
        return head() + ["class c {"] * depth + ["rate 1mbit"] + ["}"] * depth + tail()
    if kind == "longline":
        n = size // 13
        addrs = ", ".join("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range(n))
        return head() + ["    class many {", "        rate 1mbit", "        match dst " + addrs, "    }"] + tail()
    if kind == "unknown":
        return head() + ["    frobnicate %d" % i for i in range(size // 21)] + tail()
    if kind == "badvalues":
        return head() + groups(size, lambda g, t: leaf("t%d-%d" % (g, t), rate="800kbps")) + tail()
    if kind == "comments":
        return ["# " + "x" * 78] * (size // 81) + head() + tail()
    if kind == "syntaxerr":
        out = head() + groups(size, lambda g, t: leaf("t%d-%d" % (g, t), rate="8kbit")) + tail()
        return out + ["interface eth1 {", "    rate 1gbit"]
    sys.exit("unknown kind %r; one of %s" % (kind, ", ".join(KINDS)))


if len(sys.argv) < 2:
    sys.exit(__doc__)
print("\n".join(gen(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000)))
