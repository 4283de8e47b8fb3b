#!/usr/bin/env python3
"""Writes a policy with N leaf classes (groups of 100 under one interface) to stdout.

Same shape as tests/scale.rs: each tenant class matches its own /32, groups match a /24.
Usage: gen_policy.py [--interfaces K] N > big.nq
With --interfaces K (default 1) the N leaves are split over K interfaces eth0..; one
interface of 100,000 leaves is the invalid case (NQ004 too many classes, NQ010 over-reserved
 at 20gbit); with K > 1 interfaces get 100gbit so that the policy is valid.
"""
import sys

args = sys.argv[1:]
k = 1
if args[:1] == ["--interfaces"]:
    k = int(args[1])
    args = args[2:]
total = int(args[0]) if args else 10000


def iface(dev, n):
    out = ["interface %s {" % dev, "    rate %s" % ("20gbit" if k == 1 else "100gbit"), ""]
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
    return out


out = ["netqos 1", ""]
for i in range(k):
    n = total // k + (1 if i < total % k else 0)
    if i:
        out.append("")
    out += iface("eth%d" % i, n)
print("\n".join(out))
