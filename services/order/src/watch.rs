//! Following an order without polling it: a `GetOrder` with `wait_for` (the version the
//! caller has) answers once the order's version differs, or after the longest wait.
//!
//! One LISTEN per process (not per waiter): every appended event notifies its order id
//! (migration 0005), and this module fans the ids out to the waiters over a broadcast
//! channel. A waiter subscribes before it reads the order, so a change committed between
//! its read and its wait is never missed. Should the listener fail, waiters still answer
//! at their deadline, and it reconnects. Each user may hold a bounded number of waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use platform::CancellationToken;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The waits of one process.
pub struct Changes {
    sender: broadcast::Sender<Arc<str>>,
    waiting: Mutex<HashMap<Uuid, usize>>,
    /// The longest a wait lasts.
    pub max_wait: Duration,
    /// How many waits a user may hold at once.
    pub per_user: usize,
}

/// One user's wait, counted until dropped.
pub struct Waiting<'a> {
    changes: &'a Changes,
    user: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.changes.waiting.lock().expect("lock");
        if let Some(n) = waiting.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.user);
            }
        }
        metrics::gauge!("order_watches_open").decrement(1.0);
    }
}

impl Changes {
    /// Waits of at most `max_wait`, `per_user` at once per user.
    pub fn new(max_wait: Duration, per_user: usize) -> Arc<Self> {
        let (sender, _) = broadcast::channel(1024);
        Arc::new(Self {
            sender,
            waiting: Mutex::new(HashMap::new()),
            max_wait,
            per_user,
        })
    }

    /// Order ids as their events commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.sender.subscribe()
    }

    /// Counts a wait of `user`, or `None` when they already hold as many as allowed.
    pub fn enter(&self, user: Uuid) -> Option<Waiting<'_>> {
        let mut waiting = self.waiting.lock().expect("lock");
        let n = waiting.entry(user).or_default();
        if *n >= self.per_user {
            return None;
        }
        *n += 1;
        metrics::gauge!("order_watches_open").increment(1.0);
        Some(Waiting {
            changes: self,
            user,
        })
    }

    /// Listens for the store's notices until `shutdown`, reconnecting after a failure.
    pub async fn listen(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        loop {
            let connected = async {
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&pool)
                    .await?;
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener
                    .listen(&format!("orderflow_order_changes_{schema}"))
                    .await?;
                loop {
                    let notice = listener.recv().await?;
                    // No receiver is not an error: nobody is waiting.
                    let _ = self.sender.send(Arc::from(notice.payload()));
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = connected => if let Err(e) = result {
                    tracing::warn!(error = %e, "order change notices lost; waits answer at their deadline until they are back");
                },
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
                () = shutdown.cancelled() => return,
            }
        }
    }
}
