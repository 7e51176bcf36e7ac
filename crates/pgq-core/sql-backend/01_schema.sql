-- pgq_rs SQL backend, part 1: the pgq schema's tables, sequences and grants.
--
-- This backend is this project's own implementation of the pgq 3.5 SQL API in SQL and PL/pgSQL,
-- for databases where the pgq C extension cannot be created (managed PostgreSQL, no superuser).
-- It was written from pgq's documentation and black-box observation of the extension's
-- behaviour; the tables and columns are those a pgq client reads (same names, types, defaults,
-- keys and grants), so pgq clients (pgqd, python3-pgq, this project's crates) work unchanged.
--
-- Everything here runs as the installing role (the database owner is enough): no superuser, no
-- C code, no untrusted language. The roles pgq_reader, pgq_writer and pgq_admin must exist
-- (pgq_core::install creates them when it may create roles). Idempotent: tables are created when
-- missing, grants are re-applied.

CREATE SCHEMA IF NOT EXISTS pgq;
CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq TO public;

-- Consumer names.
CREATE TABLE IF NOT EXISTS pgq.consumer (
    co_id       serial,
    co_name     text        NOT NULL,
    CONSTRAINT consumer_pkey PRIMARY KEY (co_id),
    CONSTRAINT consumer_name_uq UNIQUE (co_name)
);

-- Queues and their configuration.
CREATE TABLE IF NOT EXISTS pgq.queue (
    queue_id                    serial,
    queue_name                  text        NOT NULL,
    queue_ntables               integer     NOT NULL DEFAULT 3,
    queue_cur_table             integer     NOT NULL DEFAULT 0,
    queue_rotation_period       interval    NOT NULL DEFAULT '2 hours',
    queue_switch_step1          bigint      NOT NULL DEFAULT txid_current(),
    queue_switch_step2          bigint               DEFAULT txid_current(),
    queue_switch_time           timestamptz NOT NULL DEFAULT now(),
    queue_external_ticker       boolean     NOT NULL DEFAULT false,
    queue_disable_insert        boolean     NOT NULL DEFAULT false,
    queue_ticker_paused         boolean     NOT NULL DEFAULT false,
    queue_ticker_max_count      integer     NOT NULL DEFAULT 500,
    queue_ticker_max_lag        interval    NOT NULL DEFAULT '3 seconds',
    queue_ticker_idle_period    interval    NOT NULL DEFAULT '1 minute',
    queue_per_tx_limit          integer,
    queue_data_pfx              text        NOT NULL,
    queue_event_seq             text        NOT NULL,
    queue_tick_seq              text        NOT NULL,
    queue_extra_maint           text[],
    CONSTRAINT queue_pkey PRIMARY KEY (queue_id),
    CONSTRAINT queue_name_uq UNIQUE (queue_name)
);

-- Ticks: one snapshot per queue and tick; a batch is the events between two ticks.
CREATE TABLE IF NOT EXISTS pgq.tick (
    tick_queue      int4            NOT NULL,
    tick_id         bigint          NOT NULL,
    tick_time       timestamptz     NOT NULL DEFAULT now(),
    tick_snapshot   txid_snapshot   NOT NULL DEFAULT txid_current_snapshot(),
    tick_event_seq  bigint          NOT NULL,
    CONSTRAINT tick_pkey PRIMARY KEY (tick_queue, tick_id),
    CONSTRAINT tick_queue_fkey FOREIGN KEY (tick_queue) REFERENCES pgq.queue (queue_id)
);

-- Batch ids (one sequence for every queue).
CREATE SEQUENCE IF NOT EXISTS pgq.batch_id_seq;

-- Registrations: a consumer's position on a queue and its open batch. Members of a cooperative
-- group share the group's sub_id.
CREATE TABLE IF NOT EXISTS pgq.subscription (
    sub_id          serial          NOT NULL,
    sub_queue       int4            NOT NULL,
    sub_consumer    int4            NOT NULL,
    sub_last_tick   bigint,
    sub_active      timestamptz     NOT NULL DEFAULT now(),
    sub_batch       bigint,
    sub_next_tick   bigint,
    CONSTRAINT subscription_pkey PRIMARY KEY (sub_queue, sub_consumer),
    CONSTRAINT subscription_batch_idx UNIQUE (sub_batch),
    CONSTRAINT sub_queue_fkey FOREIGN KEY (sub_queue) REFERENCES pgq.queue (queue_id),
    CONSTRAINT sub_consumer_fkey FOREIGN KEY (sub_consumer) REFERENCES pgq.consumer (co_id)
);

-- The parent of every queue's event tables.
CREATE TABLE IF NOT EXISTS pgq.event_template (
    ev_id       bigint          NOT NULL,
    ev_time     timestamptz     NOT NULL,
    ev_txid     bigint          NOT NULL DEFAULT txid_current(),
    ev_owner    int4,
    ev_retry    int4,
    ev_type     text,
    ev_data     text,
    ev_extra1   text,
    ev_extra2   text,
    ev_extra3   text,
    ev_extra4   text
);

-- Events waiting to be retried by one subscription (ev_owner = sub_id).
CREATE TABLE IF NOT EXISTS pgq.retry_queue (
    ev_retry_after  timestamptz     NOT NULL,
    ev_queue        int4            NOT NULL,
    ev_id           bigint          NOT NULL,
    ev_time         timestamptz     NOT NULL,
    ev_txid         bigint,
    ev_owner        int4            NOT NULL,
    ev_retry        int4,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text,
    CONSTRAINT rq_pkey PRIMARY KEY (ev_owner, ev_id),
    CONSTRAINT rq_queue_id_fkey FOREIGN KEY (ev_queue) REFERENCES pgq.queue (queue_id)
);
CREATE INDEX IF NOT EXISTS rq_retry_idx ON pgq.retry_queue (ev_retry_after);

-- Grants, as pgq 3.5 has them: everyone may read the queue, consumer, subscription and tick
-- tables; pgq_reader reads events; pgq_admin maintains.
REVOKE ALL ON pgq.consumer, pgq.queue, pgq.tick, pgq.subscription, pgq.event_template,
    pgq.retry_queue FROM public;
GRANT SELECT ON pgq.consumer, pgq.queue, pgq.tick, pgq.subscription, pgq.event_template
    TO pgq_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgq.consumer, pgq.queue, pgq.tick, pgq.subscription,
    pgq.retry_queue TO pgq_admin;
GRANT SELECT, INSERT, TRUNCATE ON pgq.event_template TO pgq_admin;
GRANT SELECT ON pgq.consumer, pgq.queue, pgq.tick, pgq.subscription TO public;
