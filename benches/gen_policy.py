#!/usr/bin/env python3
"""Writes a policy with N leaf classes (groups of 100 under one interface) to stdout.

Same shape as tests/scale.rs: each tenant class matches its own /32, groups match a /24.
Usage: gen_policy.py [--interfaces K] [--fireqos] N > big.nq
With --interfaces K (default 1) the N leaves are split over K interfaces eth0..; one
interface of 100,000 leaves is the invalid case (NQ004 too many classes, NQ010 over-reserved
 at 20gbit); with K > 1 interfaces get 100gbit so that the policy is valid.
With --fireqos it prints the same tree as a FireQOS config instead (benches/apply_vs_fireqos.sh):
groups are `class group`s, each group's default and the interface's are FireQOS `default`s.
"""
import sys

args = sys.argv[1:]
k = 1
if args[:1] == ["--interfaces"]:
    k = int(args[1])
    args = args[2:]
fireqos = "--fireqos" in args
args = [a for a in args if a != "--fireqos"]
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


def fireqos_iface(dev, n):
    """The tree of `iface` in FireQOS's words (one `output` interface, egress like netqos)."""
    out = ["interface %s nq%s output rate %s" % (dev, dev, "20gbit" if k == 1 else "100gbit")]
    out += ["    class control_plane rate 1gbit prio 0", "        match tcp dports 2379:2380,6443,10250"]
    for g in range((n + 99) // 100):
        out += ["    class group group%d rate 90mbit" % g, "        match dst 10.%d.%d.0/24" % (g // 256, g % 256)]
        for t in range(min(100, n - g * 100)):
            out += [
                "        class t%d_%d rate 800kbit ceil 100mbit" % (g, t),
                "            match dst 10.%d.%d.%d" % (g // 256, g % 256, t + 1),
            ]
        out += ["        class default rate 10kbit", "    class group end"]
    out += ["    class default rate 1gbit"]
    return out


if fireqos:
    out = []
    for i in range(k):
        out += fireqos_iface("eth%d" % i, total // k + (1 if i < total % k else 0))
    print("\n".join(out))
    sys.exit(0)

out = ["netqos 1", ""]
for i in range(k):
    n = total // k + (1 if i < total % k else 0)
    if i:
        out.append("")
    out += iface("eth%d" % i, n)
print("\n".join(out))
