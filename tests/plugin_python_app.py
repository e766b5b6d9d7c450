"""A confluent-kafka consumer with the lagprobe plugin switched on by two
properties, and its own on_assign and stats_cb (tests/e2e_plugin_python.sh).

  /usr/bin/python3 plugin_python_app.py BOOTSTRAP TOPIC GROUP PORT LOG PLUGIN OUT

Phases: consume everything and commit every partition 7 short of its end;
a second consumer of the same group joins (in this process, same
properties: one shared listener) and leaves; then the app stops polling
for longer than max.poll.interval.ms and is evicted. It records what it
saw itself and what the plugin's /lag and /metrics said, as one JSON
document in OUT (and /metrics with two consumers in OUT.metrics); the
shell script checks them. Exit status 0 unless it could not run at all.
"""
import json
import sys
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, TopicPartition

BOOT, TOPIC, GROUP, PORT, LOG, PLUGIN, OUT = sys.argv[1:8]
MAX_POLL_MS = 6000
BEHIND = 7
BASE = "http://127.0.0.1:%s" % PORT

calls = {"assign1": 0, "revoke1": 0, "stats1": 0, "stats2": 0}
facts = {}


def conf(stats_cb):
    # plugin.library.paths first: the lagprobe.* properties are claimed by
    # the plugin once it is loaded.
    return {
        "bootstrap.servers": BOOT, "group.id": GROUP,
        "plugin.library.paths": PLUGIN,
        "lagprobe.http.listen": "127.0.0.1:%s" % PORT,
        "lagprobe.log": "jsonl:" + LOG,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "max.poll.interval.ms": MAX_POLL_MS, "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1500, "statistics.interval.ms": 500,
        "stats_cb": stats_cb,
    }


def stats1(doc):
    calls["stats1"] += 1


def stats2(doc):
    calls["stats2"] += 1


def on_assign(consumer, parts):
    calls["assign1"] += 1


def on_revoke(consumer, parts):
    calls["revoke1"] += 1


def get(path):
    with urllib.request.urlopen(BASE + path, timeout=2) as r:
        return r.read().decode()


def lag_doc():
    try:
        return json.loads(get("/lag"))
    except Exception:
        return {"consumers": []}


def mine(doc, name):
    for c in doc["consumers"]:
        if c["name"] == name:
            return c
    return None


def poll_until(consumers, cond, seconds):
    end = time.time() + seconds
    while time.time() < end:
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                pass
        if cond():
            return True
    return False


def main():
    c1 = Consumer(conf(stats1))
    c1.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)

    # 1. consume to the end, then commit 7 short of it on every partition.
    def assigned():
        return len(c1.assignment()) > 0
    poll_until([c1], assigned, 20)
    parts = sorted(tp.partition for tp in c1.assignment())
    highs = {}
    for p in parts:
        lo, hi = c1.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=5)
        highs[p] = hi

    def at_end():
        pos = c1.position([TopicPartition(TOPIC, p) for p in parts])
        return all(tp.offset == highs[tp.partition] for tp in pos)
    facts["consumed_to_end"] = poll_until([c1], at_end, 20)
    c1.commit(offsets=[TopicPartition(TOPIC, p, highs[p] - BEHIND) for p in parts],
              asynchronous=False)
    doc = lag_doc()
    name1 = doc["consumers"][0]["name"] if doc["consumers"] else None
    facts["name1"] = name1

    def lag_settled():
        c = mine(lag_doc(), name1)
        return c is not None and all(
            x["committed_offset"] == highs[x["partition"]] - BEHIND
            and x["high_watermark"] == highs[x["partition"]]
            for x in c["partitions"]) and len(c["partitions"]) == len(parts)
    facts["lag_settled"] = poll_until([c1], lag_settled, 10)
    committed = {tp.partition: tp.offset for tp in
                 c1.committed([TopicPartition(TOPIC, p) for p in parts], timeout=5)}
    indep = {}
    for p in parts:
        lo, hi = c1.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=5,
                                          cached=False)
        indep[str(p)] = hi - committed[p]
    c = mine(lag_doc(), name1)
    facts["lag_plugin"] = {str(x["partition"]): x["lag"] for x in c["partitions"]}
    facts["lag_independent"] = indep

    # 2. a second member joins, then leaves: two rounds of rebalancing.
    before = calls["assign1"]
    c2 = Consumer(conf(stats2))
    c2.subscribe([TOPIC])

    def both_assigned():
        return (calls["assign1"] > before and len(c2.assignment()) > 0
                and len(c1.assignment()) > 0
                and len(c1.assignment()) + len(c2.assignment()) == len(parts))
    facts["two_members"] = poll_until([c1, c2], both_assigned, 25)

    def two_in_lag():
        d = lag_doc()
        return len(d["consumers"]) == 2 and all(
            x["rebalances"]["assignment_size"] > 0 for x in d["consumers"])
    facts["lag_two_consumers"] = poll_until([c1, c2], two_in_lag, 10)
    with open(OUT + ".metrics", "w") as f:
        f.write(get("/metrics"))
    mid = calls["assign1"]
    c2.close()

    def alone_again():
        return calls["assign1"] > mid and len(c1.assignment()) == len(parts)
    facts["member_left"] = poll_until([c1], alone_again, 25)

    def one_in_lag():
        return len(lag_doc()["consumers"]) == 1
    facts["lag_one_consumer"] = poll_until([c1], one_in_lag, 5)
    c = mine(lag_doc(), name1)
    facts["assign_calls"] = calls["assign1"]
    facts["probe_assigns"] = c["rebalances"]["assigns"] if c else None
    facts["revoke_calls"] = calls["revoke1"]
    facts["probe_revokes"] = c["rebalances"]["revokes"] if c else None

    # 3. stop polling past max.poll.interval.ms: evicted.
    facts["stall_start_ms"] = int(time.time() * 1000)
    time.sleep(MAX_POLL_MS / 1000 + 2)
    facts["max_poll_error"] = False
    end = time.time() + 5
    while time.time() < end and not facts["max_poll_error"]:
        m = c1.poll(0.2)
        if m is not None and m.error() is not None and \
                m.error().code() == KafkaError._MAX_POLL_EXCEEDED:
            facts["max_poll_error"] = True
    c = mine(lag_doc(), name1)
    facts["probe_evictions"] = c["poll"]["evictions"] if c else None
    facts["stats_calls"] = calls["stats1"]
    facts["stats_calls_2"] = calls["stats2"]
    c1.close()
    with open(OUT, "w") as f:
        json.dump(facts, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
