#!/usr/bin/python3
"""The Python peers' side of the side-by-side benchmarks (run by the Rust bench programs on their
private cluster; `scripts/bench-compare` sets PGQ_BENCH_PEERS to this file and PYTHONPATH to the
directory where scripts/setup-env installed pgqueue 0.6 from PyPI). Run with Debian's
/usr/bin/python3 so Debian's python3-psycopg2 and python3-pgq are used.

    peers.py pgqueue-bulk DSN QUEUE ROWS RUNS           pgqueue.bulk_insert_events of ROWS events
    peers.py pgqueue-consume DSN QUEUE CONSUMER N RUNS  pgqueue's Consumer reading one N-event batch
    peers.py pgq-consume DSN QUEUE CONSUMER N RUNS      python3-pgq's Consumer reading the same batch
    peers.py pgqueue-follow DSN QUEUE CONSUMER TOTAL STOP_AT_US
                                                        pgqueue's Consumer polling every 10 ms until
                                                        TOTAL events (0: no limit) or the epoch time
                                                        STOP_AT_US (bench/programs/bench_load.rs)

Each prints `RESULT <key> <median> ms` (and the runs) on stdout. The rows are the Rust side's: event
time now, type "bench" and a 100-byte zero-padded counter as data. The consumers read the batch as they
normally do (cursor-based fetch of 300 rows, the default of both) and do not finish it, so every
run reads the same batch, like the Rust side's `Batch::abandon`.
"""
import datetime
import os
import statistics
import sys
import tempfile
import time

import psycopg2

PAYLOAD = 100


def report(key, times):
    ms = [t * 1000.0 for t in times]
    runs = " ".join("%.1f" % m for m in ms)
    print("  %s: runs %s ms" % (key, runs))
    print("RESULT %s %.3f ms" % (key, statistics.median(ms)))
    sys.stdout.flush()


def pgqueue_bulk_insert_events(curs, queue_name, rows, columns):
    """pgqueue.bulk_insert_events with the one change psycopg2 >= 2.9 needs.

    psycopg2 2.9 quotes the `table` argument of `cursor.copy_from` as one identifier, so the
    schema-qualified event table ("pgq.event_1_0") pgqueue passes is not found. The same COPY is
    sent with `copy_expert` instead; the rows are quoted and joined by pgqueue's own helpers.
    """
    import pgqueue

    curs.execute("SELECT pgq.current_event_table(%s);", (queue_name,))
    event_tbl = curs.fetchone()[0]
    db_fields = ["ev_" + fld for fld in columns]
    content = ("\t".join([pgqueue.quote_copy(v) for v in row]) for row in rows)
    df = pgqueue._DisposableFile(content="\n".join(content) + "\n")
    curs.copy_expert("COPY %s (%s) FROM STDIN" % (event_tbl, ", ".join(db_fields)), df)


def pgqueue_bulk(dsn, queue, rows, runs):
    import pgqueue

    pgqueue.bulk_insert_events = pgqueue_bulk_insert_events  # the workaround, for Queue.insert_events too
    db = psycopg2.connect(dsn)
    curs = db.cursor()
    q = pgqueue.Queue(queue)
    times = []
    for _ in range(runs):
        curs.execute("SELECT pgq.current_event_table(%s)", (queue,))
        curs.execute("TRUNCATE %s" % curs.fetchone()[0])
        db.commit()
        start = time.perf_counter()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        data = [(now, "bench", "%0*d" % (PAYLOAD, i)) for i in range(rows)]
        q.insert_events(curs, data, ["time", "type", "data"])
        db.commit()
        times.append(time.perf_counter() - start)
        curs.execute("SELECT pgq.current_event_table(%s)", (queue,))
        curs.execute("SELECT count(*) FROM %s" % curs.fetchone()[0])
        assert curs.fetchone()[0] == rows
        db.commit()
    db.close()
    report("p1.pgqueue_copy", times)


def pgqueue_consume(dsn, queue, consumer, count, runs):
    import pgqueue

    class KeepBatch(pgqueue.Batch):
        def finish(self):
            """Leave the batch open: the next run reads the same one."""

    class Reader(pgqueue.Consumer):
        _batch_class = KeepBatch

    db = psycopg2.connect(dsn)
    reader = Reader(queue, consumer)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        seen = 0
        for batch in reader.next_batches(db, limit=1, commit=True):
            for ev in batch:
                seen += 1
        times.append(time.perf_counter() - start)
        assert seen == count, (seen, count)
    db.close()
    report("p3.pgqueue_consume", times)


def pgq_consume(dsn, queue, consumer, count, runs):
    import pgq

    class Reader(pgq.Consumer):
        seen = 0

        def process_event(self, db, ev):
            self.seen += 1

        def _finish_batch(self, curs, batch_id, ev_list):
            """Leave the batch open: the next run reads the same one."""

    fd, path = tempfile.mkstemp(suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write("[bench]\njob_name = bench_peer_%d\nsrc_db = %s\nqueue_name = %s\n"
                "consumer_name = %s\nlogfile = \npidfile = \n" % (os.getpid(), dsn, queue, consumer))
    try:
        script = Reader("bench", "src_db", ["-q", path])
        times = []
        for _ in range(runs):
            script.seen = 0
            start = time.perf_counter()
            script.work()
            times.append(time.perf_counter() - start)
            assert script.seen == count, (script.seen, count)
        script.close_database("src_db")
    finally:
        os.unlink(path)
    report("p3.pgq_consume", times)


def pgqueue_follow(dsn, queue, consumer, total, stop_at_us, poll_s=0.01):
    """Poll for batches every `poll_s`, as a pgqueue service does; each event's data is its send
    time (us since the epoch). Prints `FOLLOW <events> <p50 ms> <p99 ms> <max ms> <cpu s>`."""
    import pgqueue

    db = psycopg2.connect(dsn)
    reader = pgqueue.Consumer(queue, consumer)
    lat = []
    while (total == 0 or len(lat) < total) and time.time() * 1e6 < stop_at_us:
        for ev in reader.next_events(db, commit=True):
            now = time.time() * 1e6
            if now < stop_at_us:
                lat.append((now - int(ev.data)) / 1000.0)
        db.commit()
        time.sleep(poll_s)
    db.close()
    lat.sort()

    def q(p):
        return lat[int(round((len(lat) - 1) * p))] if lat else float("nan")

    t = os.times()
    print("FOLLOW %d %.3f %.3f %.3f %.2f" % (len(lat), q(0.5), q(0.99), lat[-1] if lat else float("nan"),
                                            t.user + t.system))
    sys.stdout.flush()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pgqueue-bulk":
        pgqueue_bulk(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "pgqueue-follow":
        pgqueue_follow(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "pgqueue-consume":
        pgqueue_consume(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "pgq-consume":
        pgq_consume(args[0], args[1], args[2], int(args[3]), int(args[4]))
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
