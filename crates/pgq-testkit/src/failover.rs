//! The set-up of a failover test: a private primary with a test database, a queue ticked on every
//! ticker round and a registered consumer, a streaming standby, and the connection string that
//! names both hosts with `target_session_attrs=read-write`.

use std::time::Instant;

use pgq_core::{ConsumerName, QueueName};

use crate::{Cluster, TestDb};

/// A primary, its standby, and a queue with a consumer on the primary's test database.
#[derive(Debug)]
pub struct Failover {
    /// The primary (stopped by [`Failover::fail_over`]).
    pub primary: Cluster,
    /// The streaming standby (promoted by [`Failover::fail_over`]).
    pub standby: Cluster,
    /// The test database, made on the primary.
    pub db: TestDb,
    /// The queue: ticked on every ticker round while events come (`ticker_idle_period` 0,
    /// `ticker_max_lag` 1 ms).
    pub queue: QueueName,
    /// The consumer registered on the queue.
    pub consumer: ConsumerName,
    /// `host=127.0.0.1,127.0.0.1 port=PRIMARY,STANDBY dbname=... user=postgres
    /// target_session_attrs=read-write connect_timeout=2`.
    pub both: String,
}

impl Failover {
    /// Start the primary, make `queue` with `consumer` registered, start the standby.
    ///
    /// # Panics
    ///
    /// When a cluster cannot be started or the queue cannot be made.
    pub async fn start(queue: QueueName, consumer: ConsumerName) -> Failover {
        let primary = Cluster::start_private().expect("a private primary");
        let db = TestDb::new_on(&primary).await;
        pgq_core::create_queue(db.pool(), &queue).await.unwrap();
        // Tick on every ticker round while events come (no idle back-off, no lag allowance).
        sqlx::query(
            "select pgq.set_queue_config($1, 'ticker_idle_period', '0'), \
                    pgq.set_queue_config($1, 'ticker_max_lag', '1 millisecond')",
        )
        .bind(queue.as_str())
        .execute(db.pool())
        .await
        .unwrap();
        pgq_core::register_consumer(db.pool(), &queue, &consumer)
            .await
            .unwrap();
        let standby = primary.start_standby().expect("a streaming standby");
        let both = format!(
            "host=127.0.0.1,127.0.0.1 port={},{} dbname={} user=postgres \
             target_session_attrs=read-write connect_timeout=2",
            primary.port(),
            standby.port(),
            db.name()
        );
        Failover {
            primary,
            standby,
            db,
            queue,
            consumer,
            both,
        }
    }

    /// Fail over: wait until the standby has replayed everything, close the test database's
    /// pool, stop the primary at once (no shutdown checkpoint) and promote the standby. Returns
    /// the moment of the promotion.
    ///
    /// # Panics
    ///
    /// When the standby does not catch up, or a cluster command fails.
    pub async fn fail_over(&self) -> Instant {
        self.standby.wait_for_replay(&self.primary).await.unwrap();
        self.db.pool().close().await;
        self.primary.stop_immediate().unwrap();
        self.standby.promote().unwrap();
        Instant::now()
    }

    /// The URL of the test database on the standby (the new primary after the failover).
    pub fn standby_url(&self) -> String {
        self.standby.url(self.db.name())
    }
}
