//! Ctrl-C for the commands that run until interrupted (`tail --follow`, `status --watch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once Ctrl-C was pressed; installed on first use, after which Ctrl-C no longer kills the
/// process but asks it to stop at the next safe point.
#[derive(Clone)]
pub(crate) struct Interrupt {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Start listening for Ctrl-C.
    pub(crate) fn install() -> Interrupt {
        let i = Interrupt {
            flag: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        let j = i.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                j.flag.store(true, Ordering::SeqCst);
                j.notify.notify_one();
            }
        });
        i
    }

    /// Whether Ctrl-C was pressed.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Wait for Ctrl-C.
    pub(crate) async fn wait(&self) {
        if self.is_set() {
            return;
        }
        self.notify.notified().await;
    }
}
