//! Every reservation ends: committed (paid), released (cancelled or expired), or released
//! here when no order was ever recorded for it.
//!
//! PlaceOrder reserves stock in the catalog before it appends `OrderPlaced`. When the
//! append fails (Postgres blinked) and the best-effort release fails too, or the process
//! dies between the two, the catalog holds a reservation no order will ever settle. The
//! sweeper asks the catalog for reservations still held after a grace period, and releases
//! each one whose order has no stream in the event store. An order that exists is left
//! alone: its own events (paid, cancelled, expired) settle it, however late they come.
//!
//! The grace period is longer than any PlaceOrder may take ([`PLACE_DEADLINE`] is
//! enforced before the append), so a placement still in progress is never swept. Replicas
//! may sweep at once: releasing is idempotent in the catalog.

use std::time::Duration;

use platform::{CancellationToken, identity::Minter};
use proto::catalog::v1::{
    ListHeldReservationsRequest, ReservationRef, catalog_service_client::CatalogServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;

/// A placement that took longer than this from reservation to append is abandoned (its
/// reservation released) rather than recorded: the sweeper's grace must exceed it.
pub const PLACE_DEADLINE: Duration = Duration::from_secs(30);

/// The audience of the sweeper's calls.
const CATALOG_SERVICE: &str = "orderflow.catalog.v1.CatalogService";

/// Releases reservations that no recorded order owns.
pub struct ReservationSweeper {
    /// The `orders` schema (the event store).
    pub pool: PgPool,
    /// The catalog.
    pub catalog: CatalogServiceClient<Channel>,
    /// The order role's credential for its calls.
    pub minter: Minter,
    /// How old a held reservation must be before it is looked at.
    pub grace: Duration,
    /// How often to look.
    pub interval: Duration,
    /// Deadline of one catalog call.
    pub timeout: Duration,
}

impl ReservationSweeper {
    /// Sweeps every `interval` until `shutdown`; failures are logged and retried next time.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.sweep_once().await {
                Ok(0) => {}
                Ok(released) => {
                    tracing::warn!(released, "released reservations no order was recorded for")
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "reservation sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One pass; returns how many reservations were released.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let before = chrono::Utc::now() - chrono::Duration::from_std(self.grace)?;
        let mut request = tonic::Request::new(ListHeldReservationsRequest {
            reserved_before: Some(prost_types::Timestamp {
                seconds: before.timestamp(),
                nanos: before.timestamp_subsec_nanos() as i32,
            }),
            page_size: 500,
        });
        request.set_timeout(self.timeout);
        self.minter
            .authorize_as_service(&mut request, CATALOG_SERVICE);
        let held = self
            .catalog
            .clone()
            .list_held_reservations(request)
            .await?
            .into_inner()
            .order_ids;
        if held.is_empty() {
            return Ok(0);
        }
        let recorded: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1)")
                .bind(&held)
                .fetch_all(&self.pool)
                .await?;
        let mut released = 0;
        for order_id in held.iter().filter(|id| !recorded.contains(id)) {
            let mut release = tonic::Request::new(ReservationRef {
                order_id: order_id.clone(),
            });
            release.set_timeout(self.timeout);
            self.minter
                .authorize_as_service(&mut release, CATALOG_SERVICE);
            self.catalog.clone().release_reservation(release).await?;
            tracing::warn!(%order_id, "released a reservation whose order was never recorded");
            metrics::counter!("order_orphan_reservations_released_total").increment(1);
            released += 1;
        }
        Ok(released)
    }
}
