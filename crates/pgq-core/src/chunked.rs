//! Many events inserted set-based in chunks: one statement ([`crate::insert_events`]) per chunk
//! of at most [`ChunkLimits::rows`] events and [`ChunkLimits::bytes`] bytes of text. The
//! producer's `send_batch` and `pgq send` both chunk this way.

use sqlx::PgConnection;

use crate::error::Result;
use crate::name::QueueName;
use crate::types::NewEvent;

/// The most events and bytes of text (every text field counted) one set-based insert statement
/// takes; at least one event per statement, whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// The most events in one statement.
    pub rows: usize,
    /// The most bytes of text in one statement.
    pub bytes: usize,
}

impl ChunkLimits {
    /// 10 000 events, 16 MiB: large enough that the statements' round trips do not count, small
    /// enough that one statement's parameters stay far from PostgreSQL's 1 GiB limits.
    pub const DEFAULT: ChunkLimits = ChunkLimits {
        rows: 10_000,
        bytes: 16 << 20,
    };

    /// At most `rows` events and `bytes` bytes per statement (each at least 1).
    pub fn new(rows: usize, bytes: usize) -> ChunkLimits {
        ChunkLimits {
            rows: rows.max(1),
            bytes: bytes.max(1),
        }
    }
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits::DEFAULT
    }
}

impl NewEvent {
    /// The bytes of text of the event: every field (type, data, extras) counted.
    pub fn text_len(&self) -> usize {
        self.named_fields()
            .iter()
            .map(|(_, v)| v.map_or(0, str::len))
            .sum()
    }
}

/// Where to cut a stream of events into chunks within `limits`.
#[derive(Debug)]
struct Cutter {
    limits: ChunkLimits,
    rows: usize,
    bytes: usize,
}

impl Cutter {
    fn new(limits: ChunkLimits) -> Cutter {
        Cutter {
            limits: ChunkLimits::new(limits.rows, limits.bytes),
            rows: 0,
            bytes: 0,
        }
    }

    /// Take `ev` in; `true` when the chunk so far must be sent before it (it then starts the
    /// next chunk).
    fn cut_before(&mut self, ev: &NewEvent) -> bool {
        let b = ev.text_len();
        let cut =
            self.rows > 0 && (self.rows >= self.limits.rows || self.bytes + b > self.limits.bytes);
        if cut {
            (self.rows, self.bytes) = (0, 0);
        }
        self.rows += 1;
        self.bytes += b;
        cut
    }
}

/// Split `events` into chunks within `limits`, in order (none for no events).
pub fn event_chunks(events: &[NewEvent], limits: ChunkLimits) -> Vec<&[NewEvent]> {
    let mut out = Vec::new();
    let mut cutter = Cutter::new(limits);
    let mut start = 0;
    for (i, ev) in events.iter().enumerate() {
        if cutter.cut_before(ev) {
            out.push(&events[start..i]);
            start = i;
        }
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// Insert the events of `events` into `queue` set-based, a chunk within `limits` per statement,
/// holding one chunk in memory at a time; returns how many were inserted. The events go in as
/// they come: call it inside a transaction for all or nothing (an error leaves the chunks sent
/// before it in the transaction). An iterator that stops early (its own error, kept by the
/// caller) ends the insert there.
///
/// Needs `pgq_writer` (`pgq_admin` for events with an explicit time).
pub async fn insert_events_chunked(
    conn: &mut PgConnection,
    queue: &QueueName,
    events: impl IntoIterator<Item = NewEvent>,
    limits: ChunkLimits,
) -> Result<u64> {
    let mut cutter = Cutter::new(limits);
    let mut chunk = Vec::new();
    let mut total = 0u64;
    for ev in events {
        if cutter.cut_before(&ev) {
            crate::insert_events(&mut *conn, queue, &chunk).await?;
            total += chunk.len() as u64;
            chunk.clear();
        }
        chunk.push(ev);
    }
    if !chunk.is_empty() {
        crate::insert_events(&mut *conn, queue, &chunk).await?;
        total += chunk.len() as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let evs: Vec<NewEvent> = (0..25).map(|i| NewEvent::new("t", i.to_string())).collect();
        let sizes: Vec<usize> = event_chunks(&evs, ChunkLimits::new(10, usize::MAX))
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        // Bytes: "t" + i x's; at most 10 bytes per chunk, but never an empty chunk.
        let evs: Vec<NewEvent> = (0..10).map(|i| NewEvent::new("t", "x".repeat(i))).collect();
        let chunks = event_chunks(&evs, ChunkLimits::new(usize::MAX, 10));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        for c in &chunks {
            let b: usize = c.iter().map(NewEvent::text_len).sum();
            assert!(b <= 10 || c.len() == 1, "{b} bytes in {} events", c.len());
        }
        assert!(event_chunks(&[], ChunkLimits::DEFAULT).is_empty());
        // Zero limits still make progress: one event per chunk.
        assert_eq!(event_chunks(&evs, ChunkLimits::new(0, 0)).len(), 10);
    }
}
