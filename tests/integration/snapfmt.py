"""registryd's snapshot format in Python (registryd/snapshot.h), for tests
that take a snapshot apart, damage it and put it back together."""
import json
import struct

MAGIC, END = b"RSNAP002", b"RSNAPEND"
TABLES = ["services", "checks", "by_name", "svc_checks", "names", "meta"]

_T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _T[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def parse(blob):
    """(index, [(table, key bytes, value bytes)]) of a well-formed snapshot."""
    assert blob[:8] == MAGIC, blob[:8]
    _ver, _hl, index, count, _ = struct.unpack_from("<IIQQQ", blob, 8)
    p, end, recs = 40, len(blob) - 20, []
    while p < end:
        t, kl, vl = struct.unpack_from("<BII", blob, p)
        p += 9
        recs.append((t, blob[p:p + kl], blob[p + kl:p + kl + vl]))
        p += kl + vl
    assert len(recs) == count
    return index, recs


def record_bytes(rec):
    t, k, v = rec
    return struct.pack("<BII", t, len(k), len(v)) + k + v


def build(index, recs, count=None):
    """A snapshot with a correct header, trailer and checksum."""
    count = len(recs) if count is None else count
    body = struct.pack("<8sIIQQQ", MAGIC, 2, 40, index, count, 0)
    body += b"".join(record_bytes(r) for r in recs)
    body += END + struct.pack("<Q", count)
    return body + struct.pack("<I", crc32c(body))


def edit_json(recs, table, fn):
    """recs with fn applied to the JSON of the first record of table."""
    out, done = [], False
    for t, k, v in recs:
        if t == TABLES.index(table) and not done:
            obj = json.loads(v)
            fn(obj)
            v = json.dumps(obj, separators=(",", ":")).encode()
            done = True
        out.append((t, k, v))
    assert done, table
    return out
