#!/usr/bin/python3
"""The Python peers for the interop tests: python3-pgq's own Consumer, CoopConsumer and producer.

    py_pgq.py consume DSN QUEUE CONSUMER COUNT [MEMBER]   print COUNT events as JSON lines, then exit
    py_pgq.py produce DSN QUEUE COUNT                     insert COUNT events in one transaction
    py_pgq.py pgqueue-consume DSN QUEUE CONSUMER COUNT    the same as consume, with pgqueue's Consumer

CONSUMER must be registered already (a MEMBER is registered by CoopConsumer itself). COUNT 0 means
"until no event arrived for 3 seconds" (for a member that gets an unknown share of a group's work).

Every command stops itself (SIGALRM, exit by signal) after DEADLINE seconds, so a peer waiting for
events that never come fails its test instead of hanging the suite.
"""
import json
import os
import signal
import sys
import tempfile
import time

import pgq


def config(dsn, queue, consumer, member):
    fd, path = tempfile.mkstemp(suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write("[py_pgq]\n")
        f.write("job_name = py_pgq_%d\n" % os.getpid())
        f.write("src_db = %s\n" % dsn)
        f.write("queue_name = %s\n" % queue)
        f.write("consumer_name = %s\n" % consumer)
        f.write("loop_delay = 0.05\n")
        f.write("logfile = \n")
        f.write("pidfile = \n")
        if member:
            f.write("subconsumer_name = %s\n" % member)
            f.write("subconsumer_timeout = 1 hour\n")
    return path


def reader_class(base):
    class Reader(base):
        want = 0
        seen = 0
        last = None

        def process_event(self, db, ev):
            row = {
                "ev_id": ev.ev_id,
                "ev_time": ev.ev_time.isoformat() if hasattr(ev.ev_time, "isoformat") else str(ev.ev_time),
                "ev_txid": ev.ev_txid,
                "ev_retry": ev.ev_retry,
                "ev_type": ev.ev_type,
                "ev_data": ev.ev_data,
                "ev_extra1": ev.ev_extra1,
                "ev_extra2": ev.ev_extra2,
                "ev_extra3": ev.ev_extra3,
                "ev_extra4": ev.ev_extra4,
            }
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
            self.seen += 1
            self.last = time.monotonic()

        def work(self):
            if self.last is None:
                self.last = time.monotonic()
            res = super().work()
            if self.want > 0 and self.seen >= self.want:
                self.looping = 0
            if self.want == 0 and time.monotonic() - self.last > 3:
                self.looping = 0
            return res

    return Reader


def consume(dsn, queue, consumer, count, member=None):
    base = pgq.CoopConsumer if member else pgq.Consumer
    cls = reader_class(base)
    path = config(dsn, queue, consumer, member)
    try:
        script = cls("py_pgq", "src_db", ["-q", path])
        script.want = count
        if member:
            script.register_consumer()
        script.start()
    finally:
        os.unlink(path)


def produce(dsn, queue, count):
    import psycopg2

    db = psycopg2.connect(dsn)
    curs = db.cursor()
    for i in range(count):
        pgq.insert_event(curs, queue, "py.type", "py data %d \t tab \\ back ünï" % i,
                         "py_e1_%d" % i, None, "py_e3", None)
    db.commit()
    db.close()


def pgqueue_consume(dsn, queue, consumer, count):
    import time

    import psycopg2
    import pgqueue

    db = psycopg2.connect(dsn)
    reader = pgqueue.Consumer(queue, consumer)
    seen = 0
    while seen < count:
        curs = db.cursor()
        for ev in reader.next_events(curs, commit=True):
            row = {"ev_id": ev.id, "ev_time": ev.time.isoformat(), "ev_txid": ev.txid,
                   "ev_retry": ev.retry, "ev_type": ev.type, "ev_data": ev.data,
                   "ev_extra1": ev.extra1, "ev_extra2": ev.extra2, "ev_extra3": ev.extra3,
                   "ev_extra4": ev.extra4}
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
            seen += 1
        db.commit()
        if seen < count:
            time.sleep(0.05)
    db.close()


# Longer than the Rust side's PEER_DEADLINE (90 s), which kills and reports first.
DEADLINE = 120


def main():
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(DEADLINE)
    cmd = sys.argv[1]
    if cmd == "consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                sys.argv[6] if len(sys.argv) > 6 else None)
    elif cmd == "pgqueue-consume":
        pgqueue_consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
