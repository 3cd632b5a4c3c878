"""The cluster handshake and the producer protocol's framed JSON messages.

The handshake is the one every Lockstep link starts with (protocol version 2): each side sends a
Hello (magic, protocol version, a fresh 32-byte nonce, cluster name, node name). The producer is
the initiator: it sends HMAC-SHA256(token, "lockstep-handshake-v2" | "initiator" | both Hellos as
they crossed the wire) first; the server checks it and only then answers with the same MAC labelled
"acceptor", which the producer checks before it sends Accept. The direction label and the two
fresh nonces make a proof useless anywhere else. The token never crosses the wire. A refusal is a
Refuse byte with a reason code.
"""

import hashlib
import hmac
import json
import os
import socket
import ssl
import struct

MAGIC = b"LKHS"
VERSION = 2
TAG_PROOF, TAG_REFUSE, TAG_ACCEPT = 1, 2, 3
MAX_MESSAGE = 64 * 1024

REASONS = {
    1: "the cluster token does not match",
    2: "wrong cluster name",
    3: "wrong protocol version",
    4: "unknown node name",
    5: "malformed handshake",
    6: "handshake timed out",
    7: "connection closed during the handshake",
    8: "the TLS certificate does not name the node it claims",
    9: "the job expects TLS (cluster.tls is on there); give tls_ca, tls_cert and tls_key",
    10: "this client speaks TLS and the job has cluster.tls off",
}


class LockstepError(Exception):
    """A refusal or failure, with the server's reason."""


def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise LockstepError("connection closed by the server")
        buf.extend(chunk)
    return bytes(buf)


def _hello(cluster, node, nonce):
    out = MAGIC + bytes([VERSION]) + nonce
    for s in (cluster.encode(), node.encode()):
        out += struct.pack("<H", len(s)) + s
    return out


def _read_hello(sock):
    first = _read_exact(sock, 1)
    if first[0] == TAG_REFUSE:
        # A refusal in place of the Hello: a TLS listener refusing a client without TLS.
        raise _refusal(sock)
    fixed = first + _read_exact(sock, 4 + 32)
    if fixed[:4] != MAGIC:
        raise LockstepError("the server did not answer with a Lockstep handshake")
    names = []
    for _ in range(2):
        (n,) = struct.unpack("<H", _read_exact(sock, 2))
        names.append(_read_exact(sock, n).decode())
    return fixed[4], fixed[5:], names[0], names[1]


def _proof(token, role, initiator_hello, acceptor_hello):
    mac = hmac.new(token, b"lockstep-handshake-v2", hashlib.sha256)
    for part in (role, initiator_hello, acceptor_hello):
        mac.update(struct.pack("<I", len(part)))
        mac.update(part)
    return mac.digest()


def _refusal(sock):
    try:
        (code,) = _read_exact(sock, 1)
        return LockstepError("refused: " + REASONS.get(code, "malformed handshake"))
    except (LockstepError, OSError):
        return LockstepError("refused: connection closed during the handshake")


def handshake(sock, token, node, cluster=None):
    """Authenticate `node` on `sock` as the initiator; returns (cluster, server node name)."""
    nonce = os.urandom(32)
    # A client without a cluster name adopts the server's, which the server sends at once.
    if cluster is not None:
        mine = _hello(cluster, node, nonce)
        sock.sendall(mine)
        version, their_nonce, their_cluster, their_node = _read_hello(sock)
    else:
        version, their_nonce, their_cluster, their_node = _read_hello(sock)
        cluster = their_cluster
        mine = _hello(cluster, node, nonce)
        sock.sendall(mine)
    if version != VERSION:
        raise LockstepError(f"refused: protocol version {version}, this client speaks {VERSION}")
    if their_cluster != cluster:
        raise LockstepError(f"refused: wrong cluster name ({cluster!r}, the server is {their_cluster!r})")
    if isinstance(sock, ssl.SSLSocket):
        # The chain was checked against the CA in the TLS handshake; the name is checked here,
        # against the node the server claims in its Hello (as every Lockstep node does).
        names = [v for k, v in sock.getpeercert().get("subjectAltName", ()) if k == "DNS"]
        if their_node not in names:
            try:
                sock.sendall(bytes([TAG_REFUSE, 8]))
            except OSError:
                pass
            raise LockstepError(
                f"refused: the server's TLS certificate names {names}, not the node it claims ({their_node!r})"
            )
    theirs = bytes([*MAGIC, version]) + their_nonce
    for s in (their_cluster.encode(), their_node.encode()):
        theirs += struct.pack("<H", len(s)) + s
    try:
        sock.sendall(bytes([TAG_PROOF]) + _proof(token, b"initiator", mine, theirs))
        (tag,) = _read_exact(sock, 1)
    except OSError:
        raise _refusal(sock) from None
    if tag == TAG_REFUSE:
        raise _refusal(sock)
    if tag != TAG_PROOF:
        raise LockstepError("refused: malformed handshake")
    their_proof = _read_exact(sock, 32)
    if not hmac.compare_digest(_proof(token, b"acceptor", mine, theirs), their_proof):
        try:
            sock.sendall(bytes([TAG_REFUSE, 1]))
        except OSError:
            pass
        raise LockstepError("refused: the server could not prove it holds the cluster token")
    sock.sendall(bytes([TAG_ACCEPT]))
    return cluster, their_node


def write_msg(sock, obj):
    body = json.dumps(obj).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)


def read_msg(sock):
    (n,) = struct.unpack("<I", _read_exact(sock, 4))
    if n > MAX_MESSAGE:
        raise LockstepError(f"the server announced a {n}-byte message")
    return json.loads(_read_exact(sock, n))


def tls_context(ca, cert, key):
    """A client context for a `cluster.tls` job: TLS 1.3, the server's chain checked against the
    CA file `ca`, this producer's certificate `cert` (it must name `producer-<id>`) and key `key`.
    The server's name is checked in the handshake, against the node it claims."""
    if not (ca and cert and key):
        raise LockstepError("TLS needs all of tls_ca, tls_cert and tls_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca)
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as e:
        raise LockstepError(f"TLS files {ca}, {cert}, {key}: {e}") from None
    return ctx


def connect(addr, timeout, tls=None):
    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise LockstepError(f"TLS with {addr}: {e}") from None
    return sock
