#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, written at fuzz time.

    make_corpus.py STATS_DIR RENDER_DIR DOC.json...

STATS_DIR gets the real statistics documents given (from bench/gen_stats),
truncations of them, targeted mutations (numbers out of range, wrong types,
escaped topic names, deep nesting, trailing NULs...) and multi-document
sequences ("\\n#~#\\n" between documents) whose offsets move, so that the
sliding-window evaluation sees lagging, stalled and rewound partitions,
and a few recipes for fuzz_stats' generated documents (first byte 0x01).
RENDER_DIR gets a few pseudo-random byte strings (fuzz_render reads its
input as a stream of choices). Deterministic: the same documents give the
same corpus."""
import hashlib
import json
import os
import random
import re
import sys

SEP = b"\n#~#\n"


def put(d, data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sub_first(pattern, repl, text, count=1):
    return re.sub(pattern, repl, text, count=count)


def mutations(doc):
    s = doc.decode("utf-8")
    out = []
    num = r'("hi_offset":)\s*-?\d+'
    for v in ["9223372036854775807", "9223372036854775808",
              "-9223372036854775808", "-9223372036854775809", "1e308",
              "1.5", "-0", "\"12\"", "null", "true", "[1,2]", "{}"]:
        out.append(sub_first(num, r"\g<1>" + v, s))
    out.append(sub_first(r'("partition":)\s*-?\d+', r"\g<1>2147483648", s))
    out.append(sub_first(r'("partition":)\s*-?\d+', r"\g<1>-5", s))
    out.append(sub_first(r'"partition":\s*-?\d+,', "", s))
    out.append(sub_first(r'("fetch_state":)\s*"[^"]*"', r"\g<1>7", s))
    out.append(sub_first(r'("ts":)\s*\d+', r"\g<1>9223372036854775807", s))
    out.append(sub_first(r'("ts":)\s*\d+', r"\g<1>-1", s))
    out.append(sub_first(r'("state":)\s*"[^"]*"', r'\g<1>"up\\u0000"', s))
    out.append(s.replace('"stats-t0"', '"stats\\u002dt0"'))
    out.append(s.replace('"stats-t0"', '"stats-t\\u00e90"'))
    out.append(s.replace('"stats-t0"', '"st\\"ats"'))
    out.append(s.replace('"topics":', '"deep":' + "[" * 70 + "]" * 70
                         + ', "topics":', 1))
    out.append(s.replace('"topics":', '"deep":' + "[" * 60 + "]" * 60
                         + ', "topics":', 1))
    out.append(s + "\0")
    out.append(s + "\0\0 \n")
    out.append("\ufeff" + s)
    out.append(s.replace(", ", ",").replace(": ", ":"))
    out.append(s.replace(",", " ,\n\t"))
    out.append(sub_first(r'"partitions":\s*\{', '"partitions":{"x":1,', s))
    out.append(sub_first(r'"partitions":\s*\{', '"partitions":[', s))
    out.append(sub_first(r'"topics":\s*\{', '"topics":7,"t2":{', s))
    out.append(sub_first(r'"cgrp":\s*\{', '"cgrp":{"rebalance_cnt":1.5,', s))
    return [m.encode("utf-8") for m in out]


def sequence(doc, steps):
    """The document several times, ts +10 s each, offsets moved per step."""
    s = doc.decode("utf-8")
    ts = int(re.search(r'"ts":\s*(\d+)', s).group(1))
    docs = []
    for i, (dhi, dapp, dcommit) in enumerate(steps):
        t = re.sub(r'("ts":)\s*\d+', lambda m: m.group(1) + str(ts + i * 10_000_000), s, count=1)
        t = re.sub(r'("hi_offset":)\s*(-?\d+)',
                   lambda m: m.group(1) + str(max(int(m.group(2)), 0) + dhi), t)
        t = re.sub(r'("ls_offset":)\s*(-?\d+)',
                   lambda m: m.group(1) + str(max(int(m.group(2)), 0) + dhi), t)
        t = re.sub(r'("app_offset":)\s*(-?\d+)',
                   lambda m: m.group(1) + str(max(int(m.group(2)), 0) + dapp), t)
        t = re.sub(r'("committed_offset":)\s*(-?\d+)',
                   lambda m: m.group(1) + str(max(int(m.group(2)), 0) + dcommit), t)
        docs.append(t.encode("utf-8"))
    return SEP.join(docs)


def main():
    stats_dir, render_dir = sys.argv[1], sys.argv[2]
    os.makedirs(stats_dir, exist_ok=True)
    os.makedirs(render_dir, exist_ok=True)
    rnd = random.Random(20240601)
    for path in sys.argv[3:]:
        with open(path, "rb") as f:
            doc = f.read()
        json.loads(doc)  # the seeds themselves are valid
        put(stats_dir, doc)
        for m in mutations(doc):
            put(stats_dir, m)
        for _ in range(12):
            put(stats_dir, doc[: rnd.randrange(1, len(doc))])
        for marker in (b'"topics"', b'"partitions"', b'"hi_offset"', b'"cgrp"'):
            i = doc.find(marker)
            if i > 0:
                put(stats_dir, doc[: i + len(marker) + 2])
        steps = [
            [(0, 0, 0), (100, 100, 100), (200, 200, 200), (300, 300, 300)],
            [(0, 0, 0), (500, 10, 0), (1000, 20, 0), (1500, 30, 0)],
            [(0, 0, 0), (300, 0, 0), (300, 0, 0), (300, 0, 0)],
            [(50, 50, 50), (60, 20, 10), (70, 70, 70)],
            [(0, 0, 0), (0, 0, 0), (0, 0, 0)],
            [(0, 0, 0), (2, 0, 0), (2, 2, 0), (2, 2, 0)],
            [(0, 0, 0), (10**18, 0, 0), (2 * 10**18, 10**18, 0)],
        ]
        for st in steps:
            put(stats_dir, sequence(doc, st))
    # Recipes (first byte 0x01): fuzz_stats generates valid documents from
    # the rest and knows the figures they must give.
    for n in (16, 48, 128, 256, 512, 1024):
        for _ in range(2):
            put(stats_dir, b"\x01" + bytes(rnd.randrange(256) for _ in range(n)))
    for n in (16, 64, 256, 1024, 4096):
        for _ in range(3):
            put(render_dir, bytes(rnd.randrange(256) for _ in range(n)))


if __name__ == "__main__":
    main()
