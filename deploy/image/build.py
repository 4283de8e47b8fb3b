#!/usr/bin/env python3
"""Builds the netqos agent's container image, offline and reproducibly: an OCI image
archive (oci-layout, index.json, blobs) with one layer made here from nothing (no base
image): /usr/bin/netqos, /usr/sbin/nft (the agent runs it for a policy's `pods` rules),
/bin/sh (dash: the DaemonSet's command picks the node's vars file), exactly the shared
libraries `ldd` lists for them, and the empty mount points. Owners are 0:0, times 0,
entries sorted, gzip without a name or time: the same inputs give the same digest.

    build.py --netqos target/release/netqos -o netqos-agent.oci.tar [--name REF]

Prints a JSON summary (manifest digest, sizes, files). `ctr -n k8s.io images import`
reads the archive; `skopeo copy oci-archive:FILE docker://REGISTRY/NAME:TAG` pushes it.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

NAME = "localhost/netqos-agent:0.1.0"
DIRS = ["etc/cni/net.d", "etc/netqos/nodes", "etc/netqos/policy", "run/netqos", "tmp", "var/lib/netqos"]
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
LDD_LINE = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")


def libraries(binary):
    """The absolute paths `ldd` lists for `binary` (the loader included)."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True, timeout=30)
    libs = []
    for line in out.stdout.splitlines():
        m = LDD_LINE.match(line)
        if m:
            libs.append(m.group(1))
        elif "=>" in line and "not found" in line:
            raise SystemExit("build.py: %s: %s" % (binary, line.strip()))
    return libs


def contents(netqos, strip):
    """Image path -> (host file, mode) for every file in the layer."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    dash = shutil.which("dash")
    if not nft or not dash:
        raise SystemExit("build.py: needs nft (nftables) and dash on this machine")
    if strip:
        subprocess.run(["strip", "--strip-all", "-o", strip, netqos], check=True, timeout=120)
        netqos_file = strip
    else:
        netqos_file = netqos
    files = {
        "usr/bin/netqos": (netqos_file, 0o755),
        "usr/sbin/nft": (os.path.realpath(nft), 0o755),
        "bin/sh": (os.path.realpath(dash), 0o755),
    }
    for binary in (netqos, nft, dash):
        for lib in libraries(binary):
            files[lib.lstrip("/")] = (os.path.realpath(lib), 0o755 if "ld-linux" in lib else 0o644)
    return files


def entry(name, kind, mode, size=0):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def layer(files):
    """The layer tar: directories then files, sorted, fixed metadata."""
    dirs = set(DIRS)
    for path in list(files) + DIRS:
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            if name in files:
                host, mode = files[name]
                with open(host, "rb") as f:
                    data = f.read()
                tar.addfile(entry(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
            else:
                tar.addfile(entry(name + "/", tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755))
    return buf.getvalue()


def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as f:
        f.write(data)
    return buf.getvalue()


def blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": "sha256:" + digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image(name, tar):
    """The OCI layout's files: path -> bytes; and the manifest's descriptor."""
    blobs = {}
    compressed = gz(tar)
    layer_desc = blob(blobs, compressed)
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = {
        "architecture": ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/bin/netqos"],
            "Cmd": ["agent", "/etc/netqos/policy/policy.nq"],
            "Env": ["PATH=/usr/sbin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }
    config_desc = blob(blobs, canonical(config))
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(blobs, canonical(manifest))
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
    }
    out = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical({"schemaVersion": 2, "manifests": [manifest_desc]}),
    }
    for digest, data in blobs.items():
        out["blobs/sha256/" + digest] = data
    return out, manifest_desc, layer_desc


def archive(path, layout):
    tmp = path + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(entry(d + "/", tarfile.DIRTYPE, 0o755))
        for name in sorted(layout):
            data = layout[name]
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    os.replace(tmp, path)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--netqos", required=True, help="the netqos binary to put in the image")
    p.add_argument("-o", "--output", required=True, help="the OCI archive to write")
    p.add_argument("--name", default=NAME, help="the image reference (default %(default)s)")
    p.add_argument("--no-strip", action="store_true", help="keep the binary's symbols")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stripped = None if args.no_strip else os.path.join(tmp, "netqos")
        files = contents(args.netqos, stripped)
        tar = layer(files)
    layout, manifest, layer_desc = image(args.name, tar)
    archive(args.output, layout)
    summary = {
        "name": args.name,
        "digest": manifest["digest"],
        "archive_bytes": os.path.getsize(args.output),
        "layer_bytes": layer_desc["size"],
        "uncompressed_bytes": len(tar),
        "files": sorted(files),
    }
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
