"""A large store made quickly: a snapshot of n instances (each with a TTL
check) built in Python and restored through PUT /v1/snapshot."""
import json
import struct

import snapfmt


def _j(o):
    return json.dumps(o, separators=(",", ":")).encode()


def big_snapshot(n, index=10, meta=None):
    svcs, checks, by_name, links = [], [], [], []
    for i in range(n):
        sid, name = "big-%d" % i, "big%d" % (i % 50)
        svcs.append((0, sid.encode(), _j({
            "ID": sid, "Service": name, "Tags": ["t"], "Address": "10.0.%d.%d" % (i // 250 % 250, i % 250),
            "Port": 8000, "Meta": meta or {}, "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False, "Node": "n1", "NodeAddress": "127.0.0.1",
            "CreateIndex": 5, "ModifyIndex": 5})))
        cid = "service:" + sid
        checks.append((1, cid.encode(), _j({
            "CheckID": cid, "Name": "ttl", "Status": "passing", "Notes": "", "Output": "",
            "ServiceID": sid, "ServiceName": name, "Type": "ttl", "Node": "n1",
            "Definition": {"TTL": "1h", "Timeout": "10s"}, "CreateIndex": 5, "ModifyIndex": 5})))
        by_name.append((2, name.encode(), sid.encode()))
        links.append((3, sid.encode(), cid.encode()))
    svcs.sort(key=lambda r: r[1])
    checks.sort(key=lambda r: r[1])
    names = sorted({r[1] for r in by_name})
    recs = svcs + checks + sorted(by_name) + sorted(links)
    recs += [(4, nm, struct.pack("<Q", index)) for nm in names]
    recs.append((5, b"index", struct.pack("<Q", index)))
    return snapfmt.build(index, recs)
