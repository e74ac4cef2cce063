//! Issuing. A paid order or a refund becomes a document waiting for its folio
//! (`pending_folio`), recorded in the consumer's transaction. Issuers (a task per replica,
//! woken by the consumer) then number waiting documents in short transactions, the only
//! time a type's folio counter is locked; build, stamp and sign each outside any lock; and
//! store the signed `DTE`s, each with its `dte.issued` in the outbox, in one transaction per
//! batch (the SII worker sends them in envelopes of many). A folio is
//! taken only in a committed numbering, and a numbered document is always finished (by the
//! next round if its issuer died), so folios stay gapless. With no folio left a document
//! simply waits and is numbered when a CAF of its type arrives.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::Instrument as _;

use chrono::NaiveDate;
use futures::StreamExt as _;
use platform::{
    CancellationToken,
    amqp::outbox::{self, NewEvent},
    clock::Clock,
};
use proto::events::v1::{DteIssued, OrderPaid, PaymentRefunded};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    caf::Caf,
    domain::{self, Content, Issued, Issuer, Item, Receptor, Sale, TipoDte},
    store::{self, DocumentRow, NewDocument, Numbering},
    xml::{
        document::{self, Stamp},
        signature::SigningIdentity,
    },
};

/// Documents numbered per transaction.
const BATCH: i64 = 50;

/// Numbered documents built and signed at once.
const FINISHING_AT_ONCE: usize = 4;

/// Prompt retries of storing a round's signed documents, before the round moves on.
const FINISH_RETRIES: u32 = 3;

/// A numbered document not finished within this long is finished by another issuer.
const STALE_NUMBERED: Duration = Duration::from_secs(30);

/// What issuing needs: who issues, with which certificate, and when "today" is in Chile.
pub struct Issuing {
    pub pool: PgPool,
    pub issuer: Issuer,
    /// The company's certificate: signs documents, envelopes and SII token requests.
    pub identity: SigningIdentity,
    pub clock: Clock,
    /// Parsed CAFs by id: parsing means decoding an RSA key, so it is done once.
    cafs: Mutex<HashMap<Uuid, Arc<Caf>>>,
    /// Wakes the issuer task when documents are waiting.
    wake: Notify,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A document now waits for its folio.
    Queued,
    /// The order or refund already has its document.
    AlreadyDone,
}

/// A document with its folio, to be built.
struct ToBuild {
    id: Uuid,
    order_id: String,
    refund_id: Option<String>,
    causation_id: String,
    folio: i64,
    caf_id: Uuid,
    fecha: NaiveDate,
    content: Content,
    /// The trace context of the event that asked for it.
    trace: std::collections::BTreeMap<String, String>,
}

/// The least time between two refreshes of the issuer's gauges.
const METRICS_GAP: Duration = Duration::from_secs(1);

impl Issuing {
    pub fn new(pool: PgPool, issuer: Issuer, identity: SigningIdentity, clock: Clock) -> Self {
        Self {
            pool,
            issuer,
            identity,
            clock,
            cafs: Mutex::default(),
            wake: Notify::new(),
        }
    }

    pub(crate) fn now_in_chile(&self) -> chrono::NaiveDateTime {
        self.clock
            .now()
            .with_timezone(&chrono_tz::America::Santiago)
            .naive_local()
    }

    async fn caf(&self, id: Uuid) -> anyhow::Result<Arc<Caf>> {
        if let Some(caf) = self.cafs.lock().expect("not poisoned").get(&id) {
            return Ok(caf.clone());
        }
        let mut conn = self.pool.acquire().await?;
        let xml = store::caf_xml(&mut conn, id).await?;
        let caf = Arc::new(Caf::parse(&xml)?);
        self.cafs
            .lock()
            .expect("not poisoned")
            .insert(id, caf.clone());
        Ok(caf)
    }

    /// Asks the issuer task to look for waiting documents now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `order.paid`: the order's boleta or factura waits for its folio.
    pub async fn order_paid(
        &self,
        tx: &mut PgConnection,
        paid: &OrderPaid,
        causation_id: &str,
    ) -> anyhow::Result<Outcome> {
        let content = domain::document_for_sale(sale_of(paid));
        if let Some(totals) = &paid.totals
            && totals.total != content.totals.total
        {
            tracing::warn!(order_id = %paid.order_id, charged = totals.total, document = content.totals.total, "the order's total differs from its lines' SII total");
        }
        let fresh = store::insert_pending(
            tx,
            &NewDocument {
                id: Uuid::now_v7(),
                order_id: &paid.order_id,
                customer_id: &paid.customer_id,
                tipo: content.tipo,
                content: Some(&content),
                refund: None,
                causation_id,
            },
        )
        .await?;
        Ok(if fresh {
            Outcome::Queued
        } else {
            Outcome::AlreadyDone
        })
    }

    /// `payment.refunded`: a nota de crédito for the order's document waits for its folio
    /// (and for the document's, if that has none yet).
    pub async fn payment_refunded(
        &self,
        tx: &mut PgConnection,
        refunded: &PaymentRefunded,
        causation_id: &str,
    ) -> anyhow::Result<Outcome> {
        let Some(original) = store::sale_document(tx, &refunded.order_id).await? else {
            anyhow::bail!(
                "order {} has no document yet to credit (order.paid not seen)",
                refunded.order_id
            );
        };
        let fresh = store::insert_pending(
            tx,
            &NewDocument {
                id: Uuid::now_v7(),
                order_id: &refunded.order_id,
                customer_id: &original.customer_id,
                tipo: TipoDte::NotaCredito,
                content: None,
                refund: Some((&refunded.refund_id, refunded.amount, refunded.full)),
                causation_id,
            },
        )
        .await?;
        Ok(if fresh {
            Outcome::Queued
        } else {
            Outcome::AlreadyDone
        })
    }

    /// Numbers, builds and stores every document that can be issued now; how many were.
    pub async fn issue_pending(&self) -> anyhow::Result<usize> {
        let mut issued = 0;
        loop {
            let mut work = self.number_batch().await?;
            let numbered_now = work.len();
            for row in store::claim_stale_numbered(&self.pool, STALE_NUMBERED, BATCH).await? {
                work.push(to_build(&row)?);
            }
            if work.is_empty() {
                return Ok(issued);
            }
            // Signing is CPU work on the blocking pool: a few at once keep the cores busy.
            // The batch is then stored in one transaction (one commit, not one per
            // document), retried at once if it fails (a Postgres blip).
            let signed: Vec<(ToBuild, tracing::Span, anyhow::Result<String>)> =
                futures::stream::iter(work.into_iter().map(|doc| self.sign(doc)))
                    .buffer_unordered(FINISHING_AT_ONCE)
                    .collect()
                    .await;
            let mut ready = Vec::with_capacity(signed.len());
            for (doc, span, xml) in signed {
                match xml {
                    Ok(xml) => ready.push((doc, span, xml)),
                    Err(e) => {
                        metrics::counter!("dte_finish_failures_total").increment(1);
                        tracing::error!(parent: &span, document = %doc.id, folio = doc.folio, error = format!("{e:#}"), "a numbered document could not be signed; it is tried again once stale");
                    }
                }
            }
            issued += self.store_with_retries(&ready).await;
            if numbered_now < BATCH as usize {
                return Ok(issued);
            }
        }
    }

    /// One short transaction: waiting documents get their folios, in ascending TipoDTE order
    /// (so concurrent issuers take the counters' locks in the same order).
    async fn number_batch(&self) -> anyhow::Result<Vec<ToBuild>> {
        let mut tx = self.pool.begin().await?;
        let mut rows = store::lock_pending(&mut tx, BATCH).await?;
        rows.sort_by_key(|r| r.tipo_dte);
        let fecha = self.now_in_chile().date();
        let mut exhausted = HashSet::new();
        let mut numbered = Vec::new();
        for row in &rows {
            let tipo = TipoDte::try_from(row.tipo_dte).map_err(anyhow::Error::msg)?;
            if exhausted.contains(&tipo) {
                continue;
            }
            let (content, references) = match (&row.refund_id, &row.content) {
                (Some(_), _) => {
                    let Some(original) = store::sale_document(&mut tx, &row.order_id).await? else {
                        continue;
                    };
                    let (Some(folio), Some(fecha), Some(content)) =
                        (original.folio, original.fch_emis, original.content.as_ref())
                    else {
                        // The document it credits has no folio yet: it waits too.
                        continue;
                    };
                    let issued = Issued {
                        tipo: TipoDte::try_from(original.tipo_dte).map_err(anyhow::Error::msg)?,
                        folio,
                        fecha,
                        content: content.0.clone(),
                    };
                    (
                        domain::nota_de_credito(
                            &issued,
                            row.refund_amount.unwrap_or_default(),
                            row.refund_full.unwrap_or_default(),
                        ),
                        Some(original.id),
                    )
                }
                (None, Some(content)) => (content.0.clone(), None),
                (None, None) => anyhow::bail!("document {} has no content", row.id),
            };
            let Some((folio, caf_id)) = store::allocate_folio(&mut tx, tipo).await? else {
                tracing::warn!(
                    tipo = tipo.code(),
                    "no folio left: documents wait for a CAF"
                );
                metrics::counter!("dte_pending_folio_total", "tipo" => tipo.to_string())
                    .increment(1);
                exhausted.insert(tipo);
                continue;
            };
            store::mark_numbered(
                &mut tx,
                &Numbering {
                    id: row.id,
                    folio,
                    caf_id,
                    fch_emis: fecha,
                    content: &content,
                    references_document_id: references,
                },
            )
            .await?;
            numbered.push(ToBuild {
                id: row.id,
                order_id: row.order_id.clone(),
                refund_id: row.refund_id.clone(),
                causation_id: row.causation_id.clone(),
                folio,
                caf_id,
                fecha,
                content,
                trace: row.trace_context.0.clone(),
            });
        }
        tx.commit().await?;
        Ok(numbered)
    }

    /// Builds, stamps and signs a numbered document outside any lock, in the trace of the
    /// payment that asked for it (returned: storing it, and its `dte.issued` event, go on in
    /// that trace).
    async fn sign(&self, doc: ToBuild) -> (ToBuild, tracing::Span, anyhow::Result<String>) {
        let span = tracing::info_span!(
            "dte.issue",
            otel.name = %format!("issue DTE {}", doc.content.tipo.code()),
            orderflow.role = "dte",
            dte.tipo = doc.content.tipo.code(),
            dte.folio = doc.folio,
        );
        platform::telemetry::adopt_stored_parent(&span, &doc.trace);
        let xml = self.build_signed(&doc).instrument(span.clone()).await;
        (doc, span, xml)
    }

    async fn build_signed(&self, doc: &ToBuild) -> anyhow::Result<String> {
        let caf = self.caf(doc.caf_id).await?;
        let now = self.now_in_chile();
        let issuer = self.issuer.clone();
        let identity = self.identity.clone();
        let content = doc.content.clone();
        let (folio, fecha) = (doc.folio, doc.fecha);
        let signed = tokio::task::spawn_blocking(move || {
            document::build_dte(
                &issuer,
                &content,
                folio,
                fecha,
                now,
                &Stamp {
                    caf_element: &caf.caf_element,
                    caf_key: &caf.private_key,
                },
                &identity,
            )
        })
        .await??;
        Ok(signed.xml)
    }

    /// [`Issuing::store`], retried after a failure (0.1, 0.4, 1.6 s); how many were issued
    /// now. Still failing, they are left numbered: the next round (or another issuer, once
    /// they are stale) finishes them.
    async fn store_with_retries(&self, signed: &[(ToBuild, tracing::Span, String)]) -> usize {
        if signed.is_empty() {
            return 0;
        }
        let mut backoff = Duration::from_millis(100);
        for attempt in 0..=FINISH_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 4;
            }
            match self.store(signed).await {
                Ok(issued) => return issued,
                Err(e) => {
                    metrics::counter!("dte_finish_failures_total").increment(1);
                    tracing::warn!(
                        documents = signed.len(),
                        attempt,
                        error = format!("{e:#}"),
                        "storing signed documents failed; retrying"
                    );
                }
            }
        }
        tracing::error!(
            documents = signed.len(),
            "signed documents could not be stored; the next round retries them"
        );
        0
    }

    /// Stores signed documents with their `dte.issued` events, in one transaction; how
    /// many were issued (another issuer may have stored one first).
    async fn store(&self, signed: &[(ToBuild, tracing::Span, String)]) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(signed.len());
        for (doc, span, xml) in signed {
            let fresh = async {
                if !store::mark_issued(&mut tx, doc.id, xml).await? {
                    return anyhow::Ok(false);
                }
                let document_id = doc.id.to_string();
                outbox::enqueue(
                    &mut tx,
                    NewEvent {
                        event_type: "dte.issued",
                        aggregate_id: &document_id,
                        payload: &DteIssued {
                            document_id: document_id.clone(),
                            order_id: doc.order_id.clone(),
                            tipo_dte: doc.content.tipo.code(),
                            folio: doc.folio,
                            refund_id: doc.refund_id.clone().unwrap_or_default(),
                        },
                        correlation_id: Some(&doc.order_id),
                        causation_id: Some(&doc.causation_id),
                    },
                )
                .await?;
                Ok(true)
            }
            .instrument(span.clone())
            .await?;
            if fresh {
                stored.push(doc);
            }
        }
        tx.commit().await?;
        for doc in &stored {
            metrics::counter!("dte_issued_total", "tipo" => doc.content.tipo.to_string())
                .increment(1);
            tracing::info!(order_id = %doc.order_id, tipo = doc.content.tipo.code(), folio = doc.folio, "document issued");
        }
        Ok(stored.len())
    }

    /// Issues waiting documents whenever woken, and every `interval` in any case (documents
    /// recorded by another replica, a numbered document whose issuer died), until
    /// `shutdown`.
    pub async fn run_issuer(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // The gauges take two queries: at most once per METRICS_GAP, not on every wake
        // (under load the consumer wakes the issuer for nearly every document), but soon
        // after a round that may have changed them, so they never lag the table by more
        // than that gap (a quiet issuer would otherwise show a past backlog for a whole
        // interval).
        let mut metrics_refreshed: Option<std::time::Instant> = None;
        loop {
            match self.issue_pending().await {
                Ok(_) => {}
                Err(e) => tracing::error!(error = format!("{e:#}"), "issuing documents"),
            }
            let since = metrics_refreshed.map(|at| at.elapsed());
            let pause = if since.is_none_or(|since| since >= METRICS_GAP) {
                if let Err(e) = self.refresh_metrics().await {
                    tracing::warn!(error = format!("{e:#}"), "cannot refresh the folio metrics");
                }
                metrics_refreshed = Some(std::time::Instant::now());
                interval
            } else {
                // Come back when the gap has passed, to refresh them.
                since.map_or(interval, |since| (METRICS_GAP - since).min(interval))
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Publishes `dte_folios_remaining{tipo}` and `dte_documents_pending_folio{tipo}`.
    pub async fn refresh_metrics(&self) -> anyhow::Result<()> {
        let remaining: HashMap<i32, i64> = store::folios_remaining(&self.pool)
            .await?
            .into_iter()
            .collect();
        let pending: HashMap<i32, i64> = store::pending_counts(&self.pool)
            .await?
            .into_iter()
            .collect();
        for tipo in TipoDte::ALL {
            let code = tipo.code();
            metrics::gauge!("dte_folios_remaining", "tipo" => tipo.to_string())
                .set(remaining.get(&code).copied().unwrap_or(0) as f64);
            metrics::gauge!("dte_documents_pending_folio", "tipo" => tipo.to_string())
                .set(pending.get(&code).copied().unwrap_or(0) as f64);
        }
        Ok(())
    }
}

/// A numbered document as stored, to be built again.
fn to_build(row: &DocumentRow) -> anyhow::Result<ToBuild> {
    let (Some(folio), Some(caf_id), Some(fecha), Some(content)) =
        (row.folio, row.caf_id, row.fch_emis, row.content.as_ref())
    else {
        anyhow::bail!("numbered document {} lacks its folio data", row.id);
    };
    Ok(ToBuild {
        id: row.id,
        order_id: row.order_id.clone(),
        refund_id: row.refund_id.clone(),
        causation_id: row.causation_id.clone(),
        folio,
        caf_id,
        fecha,
        content: content.0.clone(),
        trace: row.trace_context.0.clone(),
    })
}

/// The sale an `order.paid` event describes; a buyer with a RUT is the receptor.
fn sale_of(paid: &OrderPaid) -> Sale {
    let receptor = paid
        .buyer
        .as_ref()
        .filter(|b| !b.rut.trim().is_empty())
        .map(|b| Receptor {
            rut: platform::chile::Rut::parse(&b.rut)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| b.rut.clone()),
            razon_social: b.razon_social.clone(),
            giro: b.giro.clone(),
            address: b.address.clone(),
            comuna: b.comuna.clone(),
        });
    let items = paid
        .lines
        .iter()
        .map(|l| Item {
            code: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_net_price,
            exempt: l.exempt,
            amount: l.line_net,
        })
        .collect();
    Sale { receptor, items }
}
