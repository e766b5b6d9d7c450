"""Every lagprobe.* property through a real binding (confluent-kafka): a
good value is taken (the Consumer is created, with a probe), a bad one
fails the Consumer's creation with a message naming the property
(tests/e2e_plugin_python.sh). One line per case: "PASS name" or
"FAIL name: detail".

  /usr/bin/python3 plugin_conf_check.py BOOTSTRAP PLUGIN
"""
import sys

from confluent_kafka import Consumer, KafkaException

BOOT, PLUGIN = sys.argv[1], sys.argv[2]

# name: (good value, bad value, text the refusal must contain)
PROPS = {
    "lagprobe.stats.interval.ms": ("500", "0", "out of range"),
    "lagprobe.watchdog.interval.ms": ("50", "60001", "out of range"),
    "lagprobe.warn.ratio": ("0.5", "1", "out of range"),
    "lagprobe.critical.ratio": ("0.95", "1.01", "out of range"),
    "lagprobe.event.min.interval.ms": ("0", "-1", "out of range"),
    "lagprobe.log.level": ("7", "8", "out of range"),
    "lagprobe.unassigned.unhealthy.ms": ("0", "soon", "expected an integer"),
    "lagprobe.window.ms": ("6000", "59", "out of range"),
    "lagprobe.lag.allowance": ("0", "1.5", "expected an integer"),
    "lagprobe.storm.rebalances": ("5", "0", "out of range"),
    "lagprobe.storm.window.ms": ("60000", "0", "out of range"),
    "lagprobe.hot.share": ("1", "0", "out of range"),
    "lagprobe.slow.ratio": ("2", "1", "out of range"),
    "lagprobe.burst.ratio": ("1", "0.9", "out of range"),
    "lagprobe.hwm.refresh.ms": ("0", "nan", "expected an integer"),
    "lagprobe.dwell.ms": ("0", "-2", "out of range"),
    "lagprobe.http.listen": ("127.0.0.1:0", "127.0.0.1:65536", "expected PORT or HOST:PORT"),
    "lagprobe.log": ("none", "jsonl:", "expected stderr, syslog, none or jsonl:PATH"),
    "lagprobe.snapshot.path": ("/dev/null/x", None, None),
    "lagprobe.snapshot.interval.ms": ("1000", "99", "expected an integer in"),
}


def conf(extra):
    c = {"bootstrap.servers": BOOT, "group.id": "plugin-conf-check",
         "plugin.library.paths": PLUGIN, "lagprobe.log": "none"}
    c.update(extra)
    return c


def created(extra):
    try:
        Consumer(conf(extra)).close()
        return None
    except KafkaException as e:
        return str(e)


def refused(extra, text):
    err = created(extra)
    return err is not None and text in err and list(extra)[0] in err, err


out = []
for name, (good, bad, text) in PROPS.items():
    err = created({name: good})
    out.append((err is None, "%s=%s is taken" % (name, good), err))
    if bad is not None:
        ok, err = refused({name: bad}, text)
        out.append((ok, "%s=%s is refused, naming it" % (name, bad), err))
ok, err = refused({"lagprobe.windows.ms": "1"}, "no such configuration property")
out.append((ok, "a misspelt lagprobe.* name is refused, naming it", err))
# confluent-kafka sets plugin.library.paths before anything else, whatever
# the dict's order (in C or kcat the order is the caller's).
try:
    Consumer({"bootstrap.servers": BOOT, "group.id": "g", "lagprobe.window.ms": "6000",
              "lagprobe.log": "none", "plugin.library.paths": PLUGIN}).close()
    out.append((True, "lagprobe.* before plugin.library.paths in the dict is taken", None))
except KafkaException as e:
    out.append((False, "lagprobe.* before plugin.library.paths in the dict is taken", str(e)))
out.append((created({"lagprobe.window.ms": ""}) is None,
            "an empty value (the default again) is taken", None))

for ok, name, detail in out:
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, detail)))
