#!/usr/bin/env python3
"""Run every lagprobe benchmark and write the results table.

    bench/run.py BENCH_DIR [--write BENCHMARKS.md] [--quick]

BENCH_DIR holds the binaries built by `make bench` and the statistics
documents (stats_10.json, stats_1000.json, stats_10000.json). Raw output of
each benchmark goes to BENCH_DIR/<name>.log, the table to
BENCH_DIR/results.md and stdout; with --write, the part of BENCHMARKS.md
between the "bench:begin" and "bench:end" markers is replaced by it.
Every figure that has a target is a ratio against a baseline measured side
by side in the same run (medians of several runs) or, where the target is
absolute (milliseconds, bytes, instructions), the measured median; absolute
times are given for context. A benchmark that fails makes the script exit 1
(after writing what it has)."""
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def kv(line):
    """key=value pairs of one output line."""
    return {k: v for k, v in re.findall(r"(\w+)=([^\s]+)", line)}


def run(cmd, log, timeout=900):
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        f.write(p.stdout)
    print("  %-60s %5.1f s%s" % (" ".join(os.path.basename(c) if i == 0 else c
                                          for i, c in enumerate(cmd))[:60],
                                  time.time() - t0,
                                  "" if p.returncode == 0 else
                                  "  FAILED (rc %d, see %s)" % (p.returncode, log)),
          flush=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed, see %s" % (cmd[0], log))
    return p.stdout


def machine(bd):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cc = subprocess.run([os.environ.get("CC", "cc"), "--version"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        text=True).stdout.splitlines()
    rdk = subprocess.run(["pkg-config", "--modversion", "rdkafka"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout.strip()
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "cc": cc[0] if cc else "?",
        "rdkafka": rdk or "?",
        "load": "%.2f %.2f %.2f" % load,
    }


def callgrind(bd, mode, msgs, logdir):
    out = os.path.join(logdir, "callgrind.%s.out" % mode)
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
           "--collect-atstart=no", "--toggle-collect=consume_loop",
           os.path.join(bd, "bench_consume"), "-B",
           os.path.join(bd, "mock_broker"), "-m", str(msgs), "-p", "8",
           "-x", mode]
    run(cmd, os.path.join(logdir, "callgrind.%s.log" % mode))
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes",
                          "--threshold=100", out],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout
    res = {}
    m = re.search(r"^\s*([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", ann, re.M)
    res["total"] = int(m.group(1).replace(",", "")) if m else 0
    for fn in ("lp_on_consume", "lagprobe_batch_begin", "lagprobe_batch_end",
               "rd_kafka_message_timestamp"):
        m = re.search(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*:" + re.escape(fn)
                      + r"\s", ann, re.M)
        res[fn] = int(m.group(1).replace(",", "")) if m else 0
    return {k: v / msgs for k, v in res.items()}


def pct(r):
    return "%+.1f %%" % ((r - 1) * 100)


def yes(ok):
    return "**yes**" if ok else "**no**"


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return 2
    bd = os.path.abspath(args[0])
    write = None
    quick = "--quick" in args
    if "--write" in args:
        write = args[args.index("--write") + 1]
    B = lambda n: os.path.join(bd, n)
    plugin = os.path.join(bd, "..", "lagprobe.so")  # make plugin
    docs = [B("stats_10.json"), B("stats_1000.json"), B("stats_10000.json")]
    runs = "3" if quick else "5"
    crun = "3" if quick else "15"
    failed = []
    mi = machine(bd)
    print("lagprobe benchmarks (%s, %s CPUs, load %s)" % (mi["cpu"], mi["nproc"],
                                                          mi["load"]))

    res = {}
    steps = [
        ("consume", lambda: run([B("bench_consume"), "-B", B("mock_broker"),
                                 "-m", "200000", "-p", "8", "-r", crun] +
                                (["-L", plugin] if os.path.exists(plugin) else []),
                                B("consume.log"))),
        ("stats", lambda: run([B("bench_stats"), "-r", runs] + docs,
                              B("stats.log"))),
        ("snapshot", lambda: run([B("bench_snapshot"), "-r",
                                  "8" if quick else "20", "-s", "0.3", docs[2]],
                                 B("snapshot.log"))),
        ("memory", lambda: run([B("bench_memory"), docs[2]], B("memory.log"))),
        ("warn", lambda: run([B("bench_warn"), "-n", "40" if quick else "80"],
                             B("warn.log"))),
    ]
    for name, fn in steps:
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            failed.append("%s: %s" % (name, e))
    cg = {}
    if shutil.which("valgrind") and shutil.which("callgrind_annotate"):
        for mode in ("poll_none", "poll_noop", "poll_zero", "poll_hooks",
                     "batch_none", "batch_noop", "batch_zero", "batch_hooks"):
            try:
                cg[mode] = callgrind(bd, mode, 40000, bd)
            except Exception as e:  # noqa: BLE001
                failed.append("callgrind %s: %s" % (mode, e))
    else:
        failed.append("callgrind: valgrind not installed")

    rows = []  # (what, baseline, measured, figure, target, met)
    notes = []

    # 1. Hot path.
    if "consume" in res:
        med = {}
        per_run = {}  # (mode, run) -> ns per message
        for line in res["consume"].splitlines():
            if line.startswith("MEDIAN "):
                mode = line.split()[1]
                med[mode] = kv(line)
            elif line.startswith("RESULT "):
                w = line.split()
                per_run[(w[1], w[2])] = float(w[3])
        def f(mode, key):
            return float(med[mode][key])
        def over_noop(zero, noop):
            # The probe's own share: per run, against the do-nothing
            # interceptor of the same run (librdkafka's dispatch cancels).
            rs = sorted(per_run[(zero, r)] / per_run[(noop, r)]
                        for (m, r) in per_run if m == zero
                        and (noop, r) in per_run)
            return rs[len(rs) // 2] if rs else float("nan")
        def cpu_rows(fam, letters, target_what, hooks_what):
            """Rows for one loop family: the probe (target), the do-nothing
            interceptor, the probe with hooks; all against FAM_none."""
            base = "%.0f ns" % f(fam + "_none", "ns_per_msg")
            zero = fam + "_zero"
            r, rn = f(zero, "ratio"), over_noop(zero, fam + "_noop")
            rows.append(("1%s. CPU per message, %s vs no probe" %
                         (letters[0], target_what),
                         base, "%.0f ns" % f(zero, "ns_per_msg"),
                         "%.3f (%s; runs %s..%s); vs the do-nothing "
                         "interceptor %.3f (%s)" % (r, pct(r),
                                                    med[zero]["ratio_min"],
                                                    med[zero]["ratio_max"],
                                                    rn, pct(rn)),
                         "<= 1.02", yes(r <= 1.02)))
            for letter, mode, what in (
                    (letters[1], "noop", "a do-nothing on_consume interceptor "
                     "instead of the probe (librdkafka's own floor)"),
                    (letters[2], "hooks", hooks_what)):
                r = f(fam + "_" + mode, "ratio")
                rows.append(("1%s. same, %s" % (letter, what), base,
                             "%.0f ns" % f(fam + "_" + mode, "ns_per_msg"),
                             "%.3f (%s)" % (r, pct(r)), "-", "-"))
        cpu_rows("poll", "abc", "poll loop, probe attached (zero-code)",
                 "probe + batch_begin(1)/batch_end per message")
        cpu_rows("batch", "def", "consume_batch_queue of 100, probe attached",
                 "probe + batch_begin(n)/batch_end per batch")
        if "poll_plugin" in med:
            # Zero-code mode as a plugin against the vendored probe, both in
            # the same runs (per-run ratio, like the do-nothing comparison).
            r = over_noop("poll_plugin", "poll_zero")
            rows.append(("1l. same poll loop, the probe loaded as a plugin "
                         "(lagprobe.so by plugin.library.paths) vs vendored "
                         "(1a)", "%.0f ns" % f("poll_zero", "ns_per_msg"),
                         "%.0f ns" % f("poll_plugin", "ns_per_msg"),
                         "%.3f (%s); vs no probe %.3f" %
                         (r, pct(r), f("poll_plugin", "ratio")),
                         "<= 1.02", yes(r <= 1.02)))
    if cg:
        if "poll_zero" in cg and "poll_none" in cg:
            z, n0 = cg["poll_zero"], cg["poll_none"]
            own = z["lp_on_consume"]
            rows.append(("1g. instructions per message inside lp_on_consume "
                         "(and what it calls), callgrind",
                         "-", "%.1f" % own,
                         "%.1f of them in librdkafka's "
                         "rd_kafka_message_timestamp()" %
                         z["rd_kafka_message_timestamp"],
                         "<= 50", yes(own <= 50)))
        def loop_row(label, fam):
            """Instructions of the whole loop, zero-code vs no probe."""
            if fam + "_zero" not in cg or fam + "_none" not in cg:
                return
            z, n0 = cg[fam + "_zero"]["total"], cg[fam + "_none"]["total"]
            nz = cg.get(fam + "_noop", {}).get("total", 0)
            rows.append((label, "%.0f" % n0, "%.0f" % z,
                         "%.3f (%s)%s" % (z / n0, pct(z / n0),
                                          "; no-op interceptor %.3f" %
                                          (nz / n0) if nz else ""),
                         "-", "-"))
        loop_row("1h. instructions per message of the whole poll loop, "
                 "zero-code vs no probe", "poll")
        loop_row("1i. instructions per message of the whole batch "
                 "loop, zero-code vs no probe", "batch")
        if "poll_hooks" in cg:
            h = cg["poll_hooks"]
            hk = h["lagprobe_batch_begin"] + h["lagprobe_batch_end"]
            rows.append(("1j. instructions per message in batch_begin(1) + "
                         "batch_end (hooks per message)", "-", "%.1f" % hk,
                         "clock reads not counted (valgrind has no vDSO)",
                         "-", "-"))
        if "batch_hooks" in cg:
            h = cg["batch_hooks"]
            hk = h["lagprobe_batch_begin"] + h["lagprobe_batch_end"]
            rows.append(("1k. instructions per message in batch_begin(n) + "
                         "batch_end, batches of 100", "-", "%.1f" % hk,
                         "plus %.1f in lp_on_consume" % h["lp_on_consume"],
                         "-", "-"))

    # 2. Statistics parsing.
    if "stats" in res:
        for line in res["stats"].splitlines():
            if not line.startswith("SUMMARY "):
                continue
            s = kv(line)
            parts = int(s["partitions"])
            ms = float(s["probe_ms"])
            ratio = float(s["cjson_over_probe"])
            rows.append(("2. stats document, %d partitions (%.2f MB): "
                         "lp_stats_parse (scan + apply to %d assigned "
                         "partitions) vs cJSON parse + extract of the same "
                         "fields; CPU time" %
                         (parts, int(s["bytes"]) / 1e6, parts),
                         "cJSON %s ms (%s MB/s)" % (s["cjson_ms"], s["cjson_MBps"]),
                         "%.3f ms (%s MB/s)" % (ms, s["probe_MBps"]),
                         "%.1fx faster" % ratio, ">= 10x", yes(ratio >= 10)))
            rows.append(("2. same document: throughput of "
                         "lp_stats_parse (scan alone: %s MB/s); "
                         "jansson %s ms, %sx slower than lagprobe" %
                         (s["scan_MBps"], s["jansson_ms"],
                          s["jansson_over_probe"]),
                         "-", "%s MB/s" % s["probe_MBps"], "-", ">= 1000 MB/s",
                         yes(float(s["probe_MBps"]) >= 1000)))
            a = float(s["allocs_per_doc"])
            rows.append(("2. same document: allocations per document after "
                         "warm-up (wrapped malloc/calloc/realloc); scratch "
                         "capacity constant: %s" %
                         ("yes" if s["scratch_capacity_constant"] == "1" else "no"),
                         "-", "%.3f" % a, "-", "0", yes(a == 0)))
            if parts >= 10000:
                rows.append(("2. 10,000-partition document parsed and applied "
                             "(CPU time; wall %s ms)" % s["probe_wall_ms"],
                             "-", "%.2f ms" % ms, "-", "< 10 ms", yes(ms < 10)))

    # 3. Snapshot under load.
    if "snapshot" in res:
        idle = s = {}
        for line in res["snapshot"].splitlines():
            if line.startswith("RENDER idle"):
                idle = kv(line)
            if line.startswith("SUMMARY "):
                s = kv(line)
        if idle and s:
            rd = s["readers"]
            cr = float(s["cpu_ratio"])
            rows.append(("3. writer (on_consume, 64-message runs over 10,000 "
                         "partitions) throughput per CPU-second with %s "
                         "readers rendering vs none" % rd,
                         "%.1f M msg/s" % (float(s["writer_cpu_mps_0"]) / 1e6),
                         "%.1f M msg/s" % (float(s["writer_cpu_mps_%s" % rd]) / 1e6),
                         "%.3f (%s)" % (cr, pct(cr)), ">= 0.95",
                         yes(cr >= 0.95)))
            wr = float(s["wall_ratio"])
            rows.append(("3. same, per wall-clock second (writer pinned to CPU "
                         "0, readers to CPU 1)",
                         "%.1f M msg/s" % (float(s["writer_wall_mps_0"]) / 1e6),
                         "%.1f M msg/s" % (float(s["writer_wall_mps_%s" % rd]) / 1e6),
                         "%.3f (%s)" % (wr, pct(wr)), "-", "-"))
            if "control_cpu_ratio" in s:
                cc = float(s["control_cpu_ratio"])
                sc = float(s["shared_vs_control_ratio"])
                rows.append(("3. control: the same readers rendering an "
                             "identical probe the writer does not touch "
                             "(throughput per CPU-second vs none); writer's "
                             "probe vs control: %.3f (%s), on_consume alone "
                             "(statistics applies left out): %s vs none, %s "
                             "for the control" %
                             (sc, pct(sc), s["consume_only_ratio"],
                              s["control_consume_only_ratio"]),
                             "%.1f M msg/s" % (float(s["writer_cpu_mps_0"]) / 1e6),
                             "%.1f M msg/s" %
                             (float(s["writer_cpu_mps_control_%s" % rd]) / 1e6),
                             "%.3f (%s)" % (cc, pct(cc)), "-", "-"))
            sr = float(s["stats_ratio"])
            rows.append(("3. writer's statistics apply (10,000 partitions) "
                         "with %s readers vs none" % rd,
                         "%s ms" % s["stats_apply_ms_0"],
                         "%s ms" % s["stats_apply_ms_%s" % rd],
                         "%.3f" % sr, "-", "-"))
            for fmt, key, bkey in (("JSON", "json", "json_bytes"),
                                   ("Prometheus", "prom", "prom_bytes")):
                cpu = float(idle["%s_cpu_ms" % key])
                lcpu = float(s["load_render_%s_cpu_ms" % key])
                rows.append(("3. %s render, 10,000 partitions (%.1f MB), "
                             "CPU time of the rendering thread (wall %s ms); "
                             "while the writer runs: %.1f ms CPU" %
                             (fmt, int(idle[bkey]) / 1e6, idle["%s_ms" % key],
                              lcpu),
                             "-", "%.1f ms" % cpu, "-", "< 20 ms",
                             yes(cpu < 20)))

    # 4. Memory.
    if "memory" in res:
        for line in res["memory"].splitlines():
            if line.startswith("SUMMARY "):
                s = kv(line)
                b = float(s["bytes_per_partition"])
                rows.append(("4. memory per tracked partition, 10,000 "
                             "partitions (slots with sample ring, index, "
                             "statistics scratch, watchdog state)",
                             "probe alone %.0f KB" % (int(s["base_bytes"]) / 1024),
                             "%.0f B/partition; %.1f MB total" %
                             (b, int(s["total_bytes"]) / 1e6),
                             "-", "< 1024 B", yes(b < 1024)))

    # 5. Warning latency.
    if "warn" in res:
        for line in res["warn"].splitlines():
            if line.startswith("SUMMARY "):
                s = kv(line)
                mx = float(s["max_ms"])
                iv = float(s["watchdog_ms"])
                rows.append(("5. headroom_warn latency after the threshold is "
                             "crossed, %s trials (watchdog %s ms)" %
                             (s["trials"], s["watchdog_ms"]),
                             "-", "median %s ms, p99 %s ms, max %s ms" %
                             (s["median_ms"], s["p99_ms"], s["max_ms"]),
                             "max = %.3f x interval; early: %s" %
                             (mx / iv, "none" if s["early"] == "0" else "YES"),
                             "<= 1 interval", yes(mx <= iv and s["early"] == "0")))

    md = []
    md.append("Machine: %s CPUs, %s, kernel %s; compiler %s; librdkafka %s. "
              "Load average at the start: %s." %
              (mi["nproc"], mi["cpu"], mi["kernel"], mi["cc"], mi["rdkafka"],
               mi["load"]))
    md.append("")
    md.append("| benchmark | baseline | measured | figure | target | met |")
    md.append("|---|---|---|---|---|---|")
    for r in rows:
        md.append("| " + " | ".join(r) + " |")
    if failed:
        md.append("")
        md.append("Failed: " + "; ".join(failed))
    table = "\n".join(md) + "\n"
    with open(B("results.md"), "w") as f:
        f.write(table)
    print()
    print(table)
    if write:
        with open(write) as f:
            doc = f.read()
        b, e = "<!-- bench:begin -->", "<!-- bench:end -->"
        if b in doc and e in doc and not failed:
            doc = doc[: doc.index(b) + len(b)] + "\n" + table + doc[doc.index(e):]
            with open(write, "w") as f:
                f.write(doc)
            print("updated %s" % write)
        elif failed:
            print("%s left alone: some benchmarks failed" % write)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
