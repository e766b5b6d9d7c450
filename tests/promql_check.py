#!/usr/bin/env python3
"""Checks the shipped PromQL against a live Prometheus (tests/e2e_alerts.sh).

    promql_check.py static DASHBOARD RULES
    promql_check.py live PROMETHEUS_URL DASHBOARD RULES

Prints one line per check, "ok<TAB>description" or "not ok<TAB>description",
and "# ..." lines with details; tests/e2e_alerts.sh turns them into TAP.

static: the dashboard is Grafana dashboard JSON (schemaVersion, unique panel
ids, every panel and target on the ${datasource} variable, every $variable
defined) and every rule has the labels and annotations the README promises.

live: every panel target, every template variable query, every recording
rule (its expression and the series it records) and every alert expression
is run against Prometheus. Dashboard variables become ".*" (they stand in
=~ matchers) and $__rate_interval 1m. A panel, variable or recording rule
must return at least one series. An alert expression returns nothing while
the consumer is healthy, as it should: it must parse, Prometheus must
evaluate its rule without error, and every series selector in it must
match series (the selector as written, or, for a label value that only
exists in a failure such as status="stalled", the same labels present).
"""
import json
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml


def out(ok, desc, *details):
    for d in details:
        print("# " + d)
    print(("ok" if ok else "not ok") + "\t" + desc)
    sys.stdout.flush()


def load(dashboard, rules):
    dash = json.load(open(dashboard))
    groups = yaml.safe_load(open(rules))["groups"]
    return dash, groups


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):  # collapsed rows
            yield q


def substitute(expr):
    expr = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    return re.sub(r"\$\{?(group|topic|instance)\}?", ".*", expr)


# ---- static -------------------------------------------------------------------
def static(dashboard, rules):
    dash, groups = load(dashboard, rules)
    problems = []
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        problems.append("schemaVersion %r" % dash.get("schemaVersion"))
    for k in ("uid", "title", "panels", "templating"):
        if k not in dash:
            problems.append("no " + k)
    names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if not {"datasource", "group", "topic", "instance"} <= names:
        problems.append("variables: %s" % sorted(names))
    ids = [p.get("id") for p in panels_of(dash)]
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    ntargets = 0
    for p in panels_of(dash):
        if p.get("type") == "row":
            continue
        gp = p.get("gridPos", {})
        if not all(isinstance(gp.get(k), int) for k in "hwxy") or gp["x"] + gp["w"] > 24:
            problems.append("panel %r: gridPos %r" % (p.get("title"), gp))
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append("panel %r: datasource" % p.get("title"))
        if not p.get("targets"):
            problems.append("panel %r: no targets" % p.get("title"))
        for t in p.get("targets", []):
            ntargets += 1
            if t.get("datasource", {}).get("uid") != "${datasource}" or not t.get("expr") \
                    or not t.get("refId"):
                problems.append("panel %r: target %r" % (p.get("title"), t.get("refId")))
            for v in re.findall(r"\$\{?(\w+)", t.get("expr", "")):
                if v not in names and not v.startswith("__"):
                    problems.append("panel %r: undefined $%s" % (p.get("title"), v))
    out(not problems, "dashboard is Grafana JSON (schemaVersion %s, %d panels, %d queries, "
        "variables datasource/group/topic/instance)" % (dash.get("schemaVersion"),
                                                       len(ids), ntargets), *problems)

    problems = []
    nalerts = 0
    for g in groups:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            nalerts += 1
            sev = r.get("labels", {}).get("severity")
            ann = r.get("annotations", {})
            if sev not in ("critical", "warning", "info"):
                problems.append("%s: severity %r" % (r["alert"], sev))
            if not ann.get("summary") or "What to do" not in ann.get("description", ""):
                problems.append("%s: summary, or description with 'What to do'" % r["alert"])
    out(not problems and nalerts > 0, "every alert (%d) has a severity, a summary and a "
        "description that says what to do" % nalerts, *problems)


# ---- live -----------------------------------------------------------------------
class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400/422 carry a JSON error
            try:
                return json.load(e)
            except ValueError:
                return {"status": "error", "error": str(e)}
        except (OSError, ValueError) as e:
            return {"status": "error", "error": str(e)}

    def query(self, expr):
        """(parsed, number of series, error)"""
        d = self.get("/api/v1/query", query=expr)
        if d.get("status") != "success":
            return False, 0, d.get("error", "?")
        res = d["data"]["result"]
        return True, (len(res) if isinstance(res, list) else 1), ""


KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan"}


def selectors(expr):
    """Series selectors of a PromQL expression: name{matchers} or {matchers}."""
    e = expr
    # Drop label lists of by/without/on/ignoring/group_x, ranges and offsets.
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    found = []
    for m in re.finditer(r'([A-Za-z_:][A-Za-z0-9_:]*)?\s*(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?', e):
        name, matchers = m.group(1), m.group(2)
        if not name and not matchers:
            continue
        if name and (name.lower() in KEYWORDS or re.match(r"\s*\(", e[m.end(1):])):
            continue  # a keyword or a function call
        sel = (name or "") + (matchers or "")
        if sel not in found:
            found.append(sel)
    return found


def relaxed(sel):
    """The same selector with every matcher's value relaxed to 'label present'."""
    return re.sub(r'(\w+)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"', r'\1!=""', sel)


def live(url, dashboard, rules):
    prom = Prom(url)
    dash, groups = load(dashboard, rules)

    # Wait (at most 30 s) until every panel query and recorded series has
    # data: rate() over 1m needs two scrapes, recording rules an evaluation.
    records = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    exprs = [substitute(t["expr"]) for p in panels_of(dash) for t in p.get("targets", [])]
    end = time.time() + 30
    while time.time() < end:
        if all(prom.query(e)[1] > 0 for e in exprs + records):
            break
        time.sleep(0.5)

    for p in panels_of(dash):
        if p.get("type") == "row":
            continue
        bad = []
        for t in p.get("targets", []):
            ok, n, err = prom.query(substitute(t["expr"]))
            if not ok or n == 0:
                bad.append("%s: %s" % (t["refId"], err or "no series") + " in: " +
                           " ".join(substitute(t["expr"]).split()))
        out(not bad, "panel \"%s\": %d quer%s, each parses and returns series" %
            (p["title"], len(p["targets"]), "y" if len(p["targets"]) == 1 else "ies"), *bad)

    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.match(r"^label_values\((.*),\s*(\w+)\)$", q.strip())
        ok = bool(m)
        detail = []
        if m:
            sel, label = substitute(m.group(1)), m.group(2)
            d = prom.get("/api/v1/query", query=sel)
            res = d.get("data", {}).get("result", []) if d.get("status") == "success" else []
            ok = any(label in r["metric"] for r in res)
            if not ok:
                detail.append("no series with label %s: %s" % (label, sel))
        out(ok, "variable $%s: %s finds values" % (v["name"], q), *detail)

    # Rule health as Prometheus evaluates the file (errors such as
    # many-to-many matching only show there).
    health = {}
    end = time.time() + 10
    while time.time() < end:
        d = prom.get("/api/v1/rules")
        health = {(r.get("name"), r.get("type")): (r.get("health"), r.get("lastError", ""))
                  for g in d.get("data", {}).get("groups", []) for r in g.get("rules", [])}
        if health and all(h == "ok" for h, _ in health.values()):
            break
        time.sleep(0.5)
    nrules = sum(len(g["rules"]) for g in groups)
    out(len(health) == nrules, "Prometheus loaded all %d rules of the file" % nrules,
        *([] if len(health) == nrules else ["loaded %d" % len(health)]))

    for g in groups:
        for r in g["rules"]:
            expr = " ".join(r["expr"].split())
            if "record" in r:
                bad = []
                for q in (r["expr"], r["record"]):
                    ok, n, err = prom.query(q)
                    if not ok or n == 0:
                        bad.append("%s: %s" % (" ".join(q.split()), err or "no series"))
                h, err = health.get((r["record"], "recording"), ("missing", ""))
                if h != "ok":
                    bad.append("rule health %s %s" % (h, err))
                out(not bad, "recording rule %s: expression and recorded series return series"
                    % r["record"], *bad)
                continue
            bad, notes = [], []
            ok, n, err = prom.query(r["expr"])
            if not ok:
                bad.append("does not parse: %s" % err)
            h, err = health.get((r["alert"], "alerting"), ("missing", ""))
            if h != "ok":
                bad.append("rule health %s %s" % (h, err))
            sels = selectors(r["expr"])
            if not sels:
                bad.append("no series selector found in: " + expr)
            for s in sels:
                if prom.query(s)[1] > 0:
                    continue
                if relaxed(s) != s and prom.query(relaxed(s))[1] > 0:
                    notes.append("%s: no series in a healthy run; %s has" % (s, relaxed(s)))
                else:
                    bad.append("%s: no series" % s)
            out(not bad, "alert %s: parses, evaluates without error, each of its %d series "
                "selector%s matches series (%d alert%s now)" % (
                    r["alert"], len(sels), "" if len(sels) == 1 else "s", n, "" if n == 1 else "s"),
                *(notes + bad))


if __name__ == "__main__":
    if sys.argv[1:2] == ["static"] and len(sys.argv) == 4:
        static(*sys.argv[2:])
    elif sys.argv[1:2] == ["live"] and len(sys.argv) == 5:
        live(*sys.argv[2:])
    else:
        sys.exit(__doc__)
