#!/usr/bin/env python3
"""Which database each page a commit wrote belongs to.

Reads two copies of an LMDB data file taken around one commit (BEFORE,
AFTER: `threshold-bench --pages DIR` makes them), finds the pages whose bytes
differ, and names the tree each belongs to by walking every database's tree
in AFTER from its root: the main database (which holds the named databases'
records), the free-page database and each named database.  The meta pages
(0 and 1) are counted apart: LMDB rewrites only the start of one of them.

    bench/lmdb_pages.py DIR/msg-before.mdb DIR/msg-after.mdb

Only for 64-bit LMDB with 4096-byte pages, as built here.
"""

import collections
import struct
import sys

PAGE = 4096
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
DB_FMT = "<IHHQQQQQ"  # md_pad, md_flags, md_depth, branch, leaf, overflow, entries, root
DB_SIZE = struct.calcsize(DB_FMT)
P_INVALID = 0xFFFFFFFFFFFFFFFF


def page(data, pgno):
    return data[pgno * PAGE:(pgno + 1) * PAGE]


def nodes(p):
    lower = struct.unpack_from("<H", p, 12)[0]
    for i in range((lower - 16) // 2):
        off = struct.unpack_from("<H", p, 16 + 2 * i)[0]
        lo, hi, flags, ksize = struct.unpack_from("<HHHH", p, off)
        key = p[off + 8:off + 8 + ksize]
        yield lo, hi, flags, key, off + 8 + ksize


def walk(data, root, name, owner):
    """Record in @owner every page of the tree at @root as @name's."""
    if root == P_INVALID:
        return
    stack = [root]
    while stack:
        pgno = stack.pop()
        owner[pgno] = name
        p = page(data, pgno)
        flags = struct.unpack_from("<H", p, 10)[0]
        if flags & P_OVERFLOW:
            n = struct.unpack_from("<I", p, 12)[0]
            for k in range(1, n):
                owner[pgno + k] = name
            continue
        if flags & P_LEAF2:
            continue
        for lo, hi, nflags, key, doff in nodes(p):
            if flags & P_BRANCH:
                stack.append(lo | (hi << 16) | (nflags << 32))
                continue
            if nflags & F_BIGDATA:
                stack.append(struct.unpack_from("<Q", p, doff)[0])
            elif nflags & F_SUBDATA and not nflags & F_DUPDATA:
                db = struct.unpack_from(DB_FMT, p, doff)
                sub = key.decode("utf-8", "replace") if name == "(main)" else name
                walk(data, db[7], sub, owner)
            elif nflags & F_SUBDATA and nflags & F_DUPDATA:
                db = struct.unpack_from(DB_FMT, p, doff)  # a key's duplicates, as a tree
                walk(data, db[7], name, owner)


def meta(data):
    """The newer meta page's free and main database records."""
    best = None
    for m in (0, 1):
        p = page(data, m)
        free = struct.unpack_from(DB_FMT, p, 16 + 24)
        main = struct.unpack_from(DB_FMT, p, 16 + 24 + DB_SIZE)
        txnid = struct.unpack_from("<Q", p, 16 + 24 + 2 * DB_SIZE + 8)[0]
        if best is None or txnid > best[0]:
            best = (txnid, free, main)
    return best


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before = open(sys.argv[1], "rb").read()
    after = open(sys.argv[2], "rb").read()
    _, free, maindb = meta(after)
    owner = {}
    walk(after, free[7], "(free pages)", owner)
    walk(after, maindb[7], "(main)", owner)
    counts = collections.Counter()
    npages = len(after) // PAGE
    for pgno in range(2, npages):
        a = page(after, pgno)
        if a != page(before, pgno):
            counts[owner.get(pgno, "(not in a tree)")] += 1
    meta_changed = sum(page(after, m) != page(before, m) for m in (0, 1))
    total = sum(counts.values())
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print("  %-22s %d" % (name, n))
    print("  %-22s %d (its first %d bytes)" % ("(meta page)", meta_changed, 16 + 24 + 2 * DB_SIZE + 16))
    print("  %-22s %d pages, %d KiB" % ("total", total, total * PAGE // 1024))


if __name__ == "__main__":
    main()
