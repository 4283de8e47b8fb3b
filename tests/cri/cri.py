#!/usr/bin/python3
"""A small CRI (runtime.v1) client for the containerd test: the few RuntimeService calls
it needs, over gRPC on a unix socket (Debian's python3-grpcio), with the protobuf
messages encoded and decoded here (field numbers from the CRI api.proto), so no code
generation or Rust gRPC stack is built. Prints JSON; every call has a deadline.

    cri.py SOCKET version
    cri.py SOCKET status                        # info map of Status(verbose)
    cri.py SOCKET run NAME UID ANNOTATIONS_JSON # prints the sandbox id
    cri.py SOCKET inspect ID                    # ip and info of PodSandboxStatus(verbose)
    cri.py SOCKET stop ID | remove ID
    cri.py SOCKET pod SPEC_JSON                 # RunPodSandbox from a spec (below)
    cri.py SOCKET create POD_ID POD_SPEC_JSON CONTAINER_SPEC_JSON   # prints the container id
    cri.py SOCKET start ID | cstatus ID | cstop ID | cremove ID

A pod spec: {"name", "uid", "namespace", "host_network": bool, "log_directory"}. A container
spec, the fields the kubelet derives from a pod's container: {"name", "image", "command",
"args", "envs": {K: V}, "mounts": [{"container_path", "host_path", "readonly"}],
"capabilities": {"add": [...], "drop": [...]}, "privileged", "readonly_rootfs",
"no_new_privs", "host_network", "log_path"}.
"""

import json
import sys

import grpc

DEADLINE = 60.0


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(num, wire):
    return varint((num << 3) | wire)


def string(num, text):
    data = text.encode() if isinstance(text, str) else text
    return key(num, 2) + varint(len(data)) + data


def boolean(num, value):
    return key(num, 0) + varint(1 if value else 0)


def entries(num, mapping):
    return b"".join(string(num, string(1, k) + string(2, v)) for k, v in sorted(mapping.items()))


def decode(data):
    """Fields of one message: number -> list of ints (varint) or bytes (length-delimited)."""
    fields, i = {}, 0
    while i < len(data):
        tag, i = read_varint(data, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        fields.setdefault(num, []).append(value)
    return fields


def read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def text(fields, num):
    return fields.get(num, [b""])[0].decode()


def info_map(fields, num):
    out = {}
    for entry in fields.get(num, []):
        e = decode(entry)
        out[text(e, 1)] = text(e, 2)
    return out


def message(num, data):
    return string(num, data)


def repeated(num, items):
    return b"".join(string(num, i) for i in items)


def pod_config(spec):
    """PodSandboxConfig: metadata, log_directory, linux.security_context.namespace_options."""
    metadata = string(1, spec["name"]) + string(2, spec["uid"]) + string(3, spec.get("namespace", "default"))
    # NamespaceMode NODE = 2 (the host's network: here the namespace containerd runs in).
    namespaces = key(1, 0) + varint(2 if spec.get("host_network") else 0)
    security = message(1, namespaces)
    config = message(1, metadata)
    if spec.get("log_directory"):
        config += string(3, spec["log_directory"])
    return config + message(8, message(2, security))


def container_config(spec):
    """ContainerConfig, the way the kubelet fills it from a pod's container."""
    config = message(1, string(1, spec["name"])) + message(2, string(1, spec["image"]))
    config += repeated(3, spec.get("command", [])) + repeated(4, spec.get("args", []))
    for k, v in sorted(spec.get("envs", {}).items()):
        config += message(6, string(1, k) + string(2, v))
    for m in spec.get("mounts", []):
        config += message(7, string(1, m["container_path"]) + string(2, m["host_path"]) + boolean(3, m.get("readonly", False)))
    if spec.get("log_path"):
        config += string(11, spec["log_path"])
    caps = spec.get("capabilities", {})
    security = message(1, repeated(1, caps.get("add", [])) + repeated(2, caps.get("drop", [])))
    security += boolean(2, spec.get("privileged", False))
    # Network NODE (2) for a host-network pod, PID CONTAINER (1) as the kubelet sets it.
    security += message(3, key(1, 0) + varint(2 if spec.get("host_network") else 0) + key(2, 0) + varint(1))
    security += boolean(7, spec.get("readonly_rootfs", False)) + boolean(11, spec.get("no_new_privs", False))
    return config + message(15, message(2, security))


def call(sock, method, request):
    with grpc.insecure_channel("unix://" + sock) as channel:
        rpc = channel.unary_unary(
            "/runtime.v1.RuntimeService/" + method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        return decode(rpc(request, timeout=DEADLINE))


def main(argv):
    sock, command, args = argv[1], argv[2], argv[3:]
    if command == "version":
        r = call(sock, "Version", string(1, "v1"))
        out = {"runtime_name": text(r, 2), "runtime_version": text(r, 3)}
    elif command == "status":
        out = info_map(call(sock, "Status", boolean(1, True)), 2)
    elif command == "run":
        name, uid, annotations = args[0], args[1], json.loads(args[2])
        metadata = string(1, name) + string(2, uid) + string(3, "default")
        config = string(1, metadata) + string(2, name) + entries(7, annotations)
        r = call(sock, "RunPodSandbox", string(1, config))
        out = {"id": text(r, 1)}
    elif command == "inspect":
        r = call(sock, "PodSandboxStatus", string(1, args[0]) + boolean(2, True))
        status = decode(r.get(1, [b""])[0])
        network = decode(status.get(5, [b""])[0])
        out = {"ip": text(network, 1), "info": info_map(r, 2)}
    elif command in ("stop", "remove"):
        call(sock, {"stop": "StopPodSandbox", "remove": "RemovePodSandbox"}[command], string(1, args[0]))
        out = {}
    elif command == "pod":
        r = call(sock, "RunPodSandbox", message(1, pod_config(json.loads(args[0]))))
        out = {"id": text(r, 1)}
    elif command == "create":
        pod, container = json.loads(args[1]), json.loads(args[2])
        request = string(1, args[0]) + message(2, container_config(container)) + message(3, pod_config(pod))
        out = {"id": text(call(sock, "CreateContainer", request), 1)}
    elif command in ("start", "cremove"):
        call(sock, {"start": "StartContainer", "cremove": "RemoveContainer"}[command], string(1, args[0]))
        out = {}
    elif command == "cstop":
        call(sock, "StopContainer", string(1, args[0]) + key(2, 0) + varint(10))
        out = {}
    elif command == "cstatus":
        r = call(sock, "ContainerStatus", string(1, args[0]) + boolean(2, True))
        status = decode(r.get(1, [b""])[0])
        out = {
            # ContainerState: 0 created, 1 running, 2 exited, 3 unknown.
            "state": status.get(3, [0])[0],
            "exit_code": status.get(7, [0])[0],
            "reason": text(status, 10),
            "message": text(status, 11),
            "log_path": text(status, 15),
            "info": info_map(r, 2),
        }
    else:
        raise SystemExit("unknown command " + command)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except grpc.RpcError as e:
        sys.stderr.write("cri: %s: %s\n" % (e.code(), e.details()))
        sys.exit(1)
