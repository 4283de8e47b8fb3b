#!/usr/bin/env python3
"""Writes a policy with N leaf classes (groups of 100 under one interface) to stdout.

Same shape as tests/scale.rs: each tenant class matches its own /32, groups match a /24.
Usage: gen_policy.py N > big.nq
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
out = ["netqos 1", "", "interface eth0 {", "    rate 20gbit", ""]
out += [
    "    class control-plane {",
    "        rate 1gbit",
    "        prio 0",
    "        match tcp dport 2379-2380, 6443, 10250",
    "    }",
]
groups = (n + 99) // 100
for g in range(groups):
    out += ["    class group%d {" % g, "        rate 90mbit", "        match dst 10.%d.%d.0/24" % (g // 256, g % 256)]
    for t in range(min(100, n - g * 100)):
        out += [
            "        class t%d-%d {" % (g, t),
            "            rate 800kbit",
            "            ceil 100mbit",
            "            match dst 10.%d.%d.%d" % (g // 256, g % 256, t + 1),
            "        }",
        ]
    out += ["        class rest%d {" % g, "            rate 10kbit", "            default", "        }", "    }"]
out += ["    class bulk {", "        rate 1gbit", "        default", "    }", "}"]
print("\n".join(out))
