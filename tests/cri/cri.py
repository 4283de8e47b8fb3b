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
