"""Kafka chores for the zero-code end-to-end tests, done with Debian's
python3-confluent-kafka, independently of lagprobe (no plugin loaded here).

  plugin_kafka.py offsets BOOTSTRAP GROUP TOPIC PARTITIONS
      JSON {"P": {"committed": C, "high": H, "lag": H - C or null}}: the
      group's committed offsets (OffsetFetch) and the log end offsets
      (ListOffsets), as kafka-consumer-groups.sh computes the lag.
  plugin_kafka.py commit BOOTSTRAP GROUP TOPIC PARTITIONS OFFSET
      commits OFFSET on every partition for GROUP (no member joins).
  plugin_kafka.py produce BOOTSTRAP TOPIC COUNT BYTES
      COUNT messages of BYTES bytes, round-robin over the partitions.

Run with /usr/bin/python3 (Debian's, where confluent_kafka is installed).
"""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition


def client(boot, group):
    return Consumer({"bootstrap.servers": boot, "group.id": group,
                     "enable.auto.commit": False, "log_level": 3})


def offsets(boot, group, topic, parts):
    c = client(boot, group)
    tps = [TopicPartition(topic, p) for p in range(parts)]
    out = {}
    for tp in c.committed(tps, timeout=10):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                         timeout=10)
        committed = tp.offset if tp.offset >= 0 else None
        out[str(tp.partition)] = {
            "committed": committed, "high": hi,
            "lag": hi - committed if committed is not None else None}
    c.close()
    print(json.dumps(out, sort_keys=True))


def commit(boot, group, topic, parts, offset):
    c = client(boot, group)
    c.commit(offsets=[TopicPartition(topic, p, offset) for p in range(parts)],
             asynchronous=False)
    c.close()


def produce(boot, topic, count, size):
    p = Producer({"bootstrap.servers": boot, "linger.ms": 20, "log_level": 3})
    md = p.list_topics(topic, timeout=10).topics[topic]
    n = len(md.partitions)
    for i in range(count):
        while True:
            try:
                p.produce(topic, b"y" * size, partition=i % n)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(20):
        sys.exit("produce: not all messages delivered")


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "offsets":
        offsets(args[0], args[1], args[2], int(args[3]))
    elif cmd == "commit":
        commit(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "produce":
        produce(args[0], args[1], int(args[2]), int(args[3]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
