#!/usr/bin/python3
"""Renders the table of `scripts/bench-compare` from the `RESULT <key> <value> <unit>` and
`INFO <key> <text>` lines its bench programs printed (standard library only).

    report.py RESULTS_FILE MODE [backends]    (MODE: full or quick) -> the Markdown report on stdout

With `backends`, the results are those of `scripts/bench-compare --backend both` (keys prefixed
`extension.` and `sql.`), and the table sets our SQL backend beside the C extension.

Ratio = reference / ours for every row: all figures are costs (time, latency, CPU, tick age,
memory), so a ratio above 1 means ours is faster or cheaper than the reference.
"""
import os
import platform
import sys


def load(path):
    results, info = {}, {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 2)
            if parts[0] == "RESULT" and len(parts) == 3:
                value, _, unit = parts[2].partition(" ")
                try:
                    results[parts[1]] = (float(value), unit.strip(), value)
                except ValueError:
                    pass
            elif parts[0] == "INFO" and len(parts) >= 2:
                info[parts[1]] = parts[2] if len(parts) == 3 else ""
    return results, info


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "ms" and v >= 100:
        return "%.0f ms" % v
    if unit in ("ms", "s", "%", "MiB"):
        return "%.2f %s" % (v, unit) if v < 10 else "%.1f %s" % (v, unit)
    return "%g %s" % (v, unit)


class Table:
    def __init__(self, results):
        self.r = results
        self.rows = []

    def get(self, key):
        v = self.r.get(key)
        return v[0] if v else None

    def row(self, what, ours, ours_unit, ref, ref_unit, ref_label, goal, verdict):
        """verdict: None (no goal: informational), or a function of (ours, ref, ratio) -> bool."""
        ratio = ref / ours if ours and ref is not None else None
        if verdict is None:
            status = "info"
        elif ours is None:
            status = "NOT RUN"
        else:
            status = "PASS" if verdict(ours, ref, ratio) else "FAIL"
        if not ref_label:
            ref_cell = "—"
        elif ref is None:
            ref_cell = "n/a"
        else:
            ref_cell = "%s %s" % (ref_label, fmt(ref, ref_unit))
        self.rows.append((what, fmt(ours, ours_unit), ref_cell,
                          "%.2f×" % ratio if ratio is not None else "—", goal, status))

    def markdown(self):
        head = ("what", "ours", "reference", "ratio", "goal", "result")
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


def build(results, mode):
    t = Table(results)
    g = t.get

    def n(key):
        return "%d" % g(key) if g(key) is not None else "?"

    # P1
    rows = n("p1.rows")
    t.row("**P1** bulk produce `Producer::copy`, %s events (100-byte payloads)" % rows,
          g("p1.ours_copy"), "ms", g("p1.psql_copy"), "ms",
          "`psql \\copy` into an equivalent table + txid index", "≥ 0.85×",
          lambda o, r, x: x is not None and x >= 0.85)
    t.row("bulk produce, same rows: ours vs pgqueue 0.6 `bulk_insert_events`",
          g("p1.ours_copy"), "ms", g("p1.pgqueue_copy"), "ms", "pgqueue", "—", None)
    if g("p1.pgqueue_copy") and g("p1.psql_copy"):
        t.row("pgqueue `bulk_insert_events` vs `psql \\copy` (pgqueue's own ratio)",
              g("p1.pgqueue_copy"), "ms", g("p1.psql_copy"), "ms", "`psql \\copy`", "—", None)
    # P2
    t.row("**P2** set-based produce `send_batch`, %s events in one transaction" % n("p2.rows"),
          g("p2.send_batch"), "ms", g("p2.send_loop"), "ms", "loop of `send`", "≥ 10×",
          lambda o, r, x: x is not None and x >= 10)
    t.row("`copy` of the same events (needs `pgq_admin`), for scale",
          g("p2.copy"), "ms", g("p2.send_loop"), "ms", "loop of `send`", "—", None)
    # P3
    ev = n("p3.events")
    t.row("**P3** consume one %s-event batch (run loop: handler per event, batch finished)" % ev,
          g("p3.ours"), "ms", g("p3.psql_select"), "ms", "`psql` SELECT of the batch's rows", "≥ 0.6×",
          lambda o, r, x: x is not None and x >= 0.6)
    t.row("consume, same batch, through the `Batch` API (`next_batch` + `next_chunk`, cursor) vs the run loop",
          g("p3.ours_batch_api"), "ms", g("p3.ours"), "ms", "run loop", "—", None)
    t.row("consume, same batch, vs `psql` COPY (batch SQL) TO STDOUT",
          g("p3.ours"), "ms", g("p3.psql_copy"), "ms", "`psql` COPY", "—", None)
    t.row("**P3** consume, same batch, vs pgqueue 0.6 `Consumer`",
          g("p3.ours"), "ms", g("p3.pgqueue_consume"), "ms", "pgqueue", "≥ 5×",
          lambda o, r, x: x is not None and x >= 5)
    t.row("consume, same batch, vs python3-pgq `Consumer`",
          g("p3.ours"), "ms", g("p3.pgq_consume"), "ms", "python3-pgq", "—", None)
    # P4
    for rate in (100, 1000):
        lost = g("p4.ours.r%d.lost" % rate)
        for q, limit in (("p50", 5.0), ("p99", 15.0)):
            ours = g("p4.ours.r%d.%s" % (rate, q))
            ref10 = g("p4.pgqd10ms.r%d.%s" % (rate, q))
            ref1s = g("p4.pgqd1000ms.r%d.%s" % (rate, q))
            label = "pgqd 10 ms + 10 ms polling:"
            if ref1s is not None:
                label = "pgqd 1 s + polling: %s; %s" % (fmt(ref1s, "ms"), label)
            t.row("**P4** end-to-end latency %s at %d ev/s, lag-0 queue, pgq-consumer run loop "
                  "(lost: %s)" % (q, rate, "n/a" if lost is None else "%d" % lost),
                  ours, "ms", ref10, "ms", label, "≤ %g ms, 0 lost" % limit,
                  lambda o, r, x, limit=limit, lost=lost: o <= limit and lost == 0)
        core_lost = g("p4.ours_core.r%d.lost" % rate)
        t.row("latency p99 at %d ev/s, minimal pgq-core consumer instead (p50 %s, lost: %s)"
              % (rate, fmt(g("p4.ours_core.r%d.p50" % rate), "ms"),
                 "n/a" if core_lost is None else "%d" % core_lost),
              g("p4.ours_core.r%d.p99" % rate), "ms", g("p4.pgqd10ms.r%d.p99" % rate), "ms",
              "pgqd 10 ms + 10 ms polling:", "—", None)
    # Ticker CPU
    t.row("ticker idle cost, one lag-0 queue (process + its sessions, % of a core)",
          g("idle.ours_cpu"), "%", g("idle.pgqd10ms_cpu"), "%", "pgqd at 10 ms", "≤ pgqd",
          lambda o, r, x: r is not None and o <= r)
    dbs, queues = n("p5.dbs"), n("p5.queues")
    scale = "%s dbs × %s queues" % (dbs, queues)
    if mode == "quick" or (g("p5.dbs") is not None and g("p5.dbs") < 200):
        scale += " (shrunk: goal is for 200 × 5)"
    t.row("**P5** tick lag, worst tick age, %s (queues due a tick every round)" % scale,
          g("p5.ours_worst_age"), "s", g("p5.pgqd_worst_age"), "s", "pgqd", "≤ 2 s",
          lambda o, r, x: o <= 2.0)
    t.row("**P5** CPU, ticker + whole cluster, %s (%% of a core)" % scale,
          g("p5.ours_cpu"), "%", g("p5.pgqd_cpu"), "%", "pgqd", "≤ pgqd",
          lambda o, r, x: r is not None and o <= r)
    # P9
    hold = n("p9.hold")
    for phase, what in (("before", "before"), ("held", "while held (%s s)" % hold),
                        ("after30", "first 30 s after release"), ("after", "later")):
        und = g("p9.ours.undelivered")
        for q in ("p50", "p99"):
            goal, verdict = "—", None
            if phase == "held" and q == "p99":
                goal = "≤ 15 ms and ≤ pgqd, 0 undelivered"
                verdict = (lambda o, r, x, und=und:
                           o <= 15.0 and (r is None or o <= r) and und == 0)
            t.row("**P9** latency %s %s, 1000 ev/s, horizon held (undelivered: %s)"
                  % (q, what, "n/a" if und is None else "%d" % und),
                  g("p9.ours.%s.%s" % (phase, q)), "ms", g("p9.pgqd10ms.%s.%s" % (phase, q)),
                  "ms", "pgqd 10 ms + 10 ms polling:", goal, verdict)
    t.row("**P9** subscription row updates per second while held",
          g("p9.ours.held.sub_updates_per_s"), "updates/s",
          g("p9.pgqd10ms.held.sub_updates_per_s"), "updates/s", "pgqd + polling:", "—", None)
    # P10
    lost10 = g("p10.ours.lost")
    for q, limit in (("p50", None), ("p99", 15.0)):
        goal, verdict = "—", None
        if limit is not None:
            goal = "≤ %g ms and ≤ pgqd, 0 lost" % limit
            verdict = (lambda o, r, x, limit=limit, lost=lost10:
                       o <= limit and (r is None or o <= r) and lost == 0)
        t.row("**P10** worst consumer's %s, 10 consumer processes on one lag-0 queue, 1000 ev/s "
              "(lost: %s)" % (q, "n/a" if lost10 is None else "%d" % lost10),
              g("p10.ours.worst_%s" % q), "ms", g("p10.pgqd10ms.worst_%s" % q), "ms",
              "pgqd 10 ms + pgqueue polling 10 ms:", goal, verdict)
    for part, what in (("db", "database"), ("ticker", "ticker"), ("consumer", "one consumer")):
        t.row("P10 CPU of the %s (%% of a core)" % what,
              g("p10.ours.cpu_%s" % part), "%", g("p10.pgqd10ms.cpu_%s" % part), "%",
              "pgqd + pgqueue:", "—", None)
    # P11
    lost11 = g("p11.ours.lost")
    for q, limit in (("p50", 5.0), ("p99", 20.0)):
        t.row("**P11** latency %s at 10 000 ev/s (singly and in batches; reached %s ev/s; lost: %s)"
              % (q, n("p11.ours.reached"), "n/a" if lost11 is None else "%d" % lost11),
              g("p11.ours.%s" % q), "ms", g("p11.pgqd10ms.%s" % q), "ms",
              "pgqd 10 ms + pgqueue polling 10 ms:", "≤ %g ms, 0 lost" % limit,
              lambda o, r, x, limit=limit, lost=lost11: o <= limit and lost == 0)
    # P12
    lag12 = g("p12.ours.lag_max")
    t.row("**P12** sustained pipeline, 4 producers × batches of 100: events/s delivered "
          "(worst lag %s) vs the same rows into a plain table" % fmt(lag12, "ms"),
          g("p12.ours.delivered_per_s"), "ev/s", g("p12.table.rows_per_s"), "rows/s",
          "plain table:", "ours ≥ 0.7× table (ratio ≤ 1.43), lag ≤ 1 s",
          lambda o, r, x, lag=lag12: x is not None and x <= 1 / 0.7 and lag is not None and lag <= 1000)
    t.row("P12 the same load through pgqd 10 ms + pgqueue: delivered ev/s (worst lag %s)"
          % fmt(g("p12.pgqd10ms.lag_max"), "ms"),
          g("p12.ours.delivered_per_s"), "ev/s", g("p12.pgqd10ms.delivered_per_s"), "ev/s",
          "pgqd + pgqueue:", "—", None)
    # P6
    t.row("**P6** peak RSS of a consumer process over one %s-event batch" % n("p6.events"),
          g("p6.peak_rss"), "MiB", None, "MiB", "", "≤ 64 MiB",
          lambda o, r, x: o <= 64.0)
    return t


# (key, unit, what) of the figures compared between the backends (P1-P4 and single sends).
BACKEND_ROWS = (
    ("p1.ours_copy", "ms", "**P1** `Producer::copy` of %(p1.rows)s events"),
    ("p2.send_batch", "ms", "**P2** `send_batch`, %(p2.rows)s events in one statement"),
    ("p2.send_loop", "ms", "a loop of %(p2.rows)s single `send`s in one transaction"),
    ("p2.send_per_tx", "ms", "%(p2.tx_rows)s single `send`s, a transaction each"),
    ("p3.ours", "ms", "**P3** run loop over one %(p3.events)s-event batch"),
    ("p3.ours_batch_api", "ms", "**P3** `Batch` API, same batch"),
    ("p4.ours.r100.p50", "ms", "**P4** latency p50 at 100 ev/s"),
    ("p4.ours.r100.p99", "ms", "**P4** latency p99 at 100 ev/s"),
    ("p4.ours.r1000.p50", "ms", "**P4** latency p50 at 1000 ev/s"),
    ("p4.ours.r1000.p99", "ms", "**P4** latency p99 at 1000 ev/s"),
)


def build_backends(results):
    """Our SQL backend (ours) beside the C extension (reference): goal ≥ 0.8× on each."""
    t = Table(results)

    def count(key):
        v = t.get("sql." + key) or t.get("extension." + key)
        return "%d" % v if v is not None else "?"

    names = {k: count(k) for k in ("p1.rows", "p2.rows", "p2.tx_rows", "p3.events")}
    for key, unit, what in BACKEND_ROWS:
        t.row(what % names, t.get("sql." + key), unit, t.get("extension." + key), unit,
              "extension", "≥ 0.8×", lambda o, r, x: x is not None and x >= 0.8)
    return t


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = "%.0f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return "%s, %d cores, %s RAM, %s %s" % (cpu, os.cpu_count() or 0, mem, platform.system(), platform.release())


def main():
    path, mode = sys.argv[1], sys.argv[2]
    backends = sys.argv[3:] == ["backends"]
    results, info = load(path)
    t = build_backends(results) if backends else build(results, mode)
    loads = [(k[len("load_"):], v) for k, v in info.items() if k.startswith("load_")]
    failed = [k[len("failed_"):] for k in info if k.startswith("failed_")]
    pg = info.get("pg_version", "?").split(" on ")[0]
    passes = sum(1 for r in t.rows if r[5] == "PASS")
    goals = sum(1 for r in t.rows if r[5] in ("PASS", "FAIL", "NOT RUN"))
    out = []
    out.append("# Benchmarks side by side, %s (%s run)" % (info.get("date", "?"), mode))
    out.append("")
    backend = info.get("backend", "extension")
    out.append("- Command: `scripts/bench-compare%s%s` (release builds; private PostgreSQL clusters "
               "started by the bench programs; medians of runs)"
               % (" --quick" if mode == "quick" else "",
                  " --backend %s" % backend if backend != "extension" else ""))
    out.append("- pgq backend of the benchmark databases: %s"
               % {"sql": "our SQL backend (no C extension)",
                  "both": "each part on the pgq C extension, then on our SQL backend (ours); "
                          "ratio = extension ÷ SQL backend"}.get(backend, "the pgq C extension"))
    out.append("- Machine: %s" % machine())
    out.append("- PostgreSQL: %s, pgq %s; pgqd %s; pgqueue 0.6 (PyPI) and python3-pgq %s on Debian's python3 / psycopg2 %s"
               % (pg, info.get("pgq_version", "?"), info.get("pgqd_version", "?"),
                  info.get("python3_pgq_version", "?"), info.get("psycopg2_version", "?")))
    out.append("- Commit: %s" % info.get("commit", "?"))
    out.append("- Load average (1/5/15 min) before each part — the 2-core machine is shared, so "
               "figures vary between runs: " + "; ".join("%s %s" % (k, v) for k, v in loads))
    if failed:
        out.append("- **Parts that failed** (see the log): " + ", ".join(failed))
    out.append("- Goals met: **%d of %d**. Ratio = reference ÷ ours (above 1: ours is faster or cheaper)." % (passes, goals))
    out.append("")
    out.append(t.markdown())
    out.append("")
    out.append("<details><summary>Raw results</summary>")
    out.append("")
    out.append("```")
    out += ["%s %s %s" % (k, raw, u) for k, (_, u, raw) in results.items()]
    out.append("```")
    out.append("")
    out.append("</details>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
