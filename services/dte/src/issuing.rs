//! Issuing: a paid order or a refund becomes a document waiting for a folio; a folio is
//! allocated, the document built, stamped and signed, and `dte.issued` written to the
//! outbox, all in one transaction. With no folio left the document waits (`pending_folio`)
//! and is issued when a CAF of its type is uploaded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::NaiveDate;
use platform::{
    amqp::outbox::{self, NewEvent},
    clock::Clock,
};
use proto::events::v1::{DteIssued, OrderPaid, PaymentRefunded};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    caf::Caf,
    domain::{self, Content, Issued, Issuer, Item, Receptor, Sale, TipoDte},
    store::{self, DocumentRow, NewDocument},
    xml::{
        document::{self, Stamp},
        signature::SigningIdentity,
    },
};

/// What issuing needs: who issues, with which certificate, and when "today" is in Chile.
pub struct Issuing {
    pub pool: PgPool,
    pub issuer: Issuer,
    /// The company's certificate: signs documents, envelopes and SII token requests.
    pub identity: SigningIdentity,
    pub clock: Clock,
    /// Parsed CAFs by id: parsing means decoding an RSA key, so it is done once.
    cafs: Mutex<HashMap<Uuid, Arc<Caf>>>,
}

/// What became of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued {
        folio: i64,
    },
    PendingFolio,
    /// The document it refers to has no folio yet.
    Waiting,
    /// The order or refund already has its document.
    AlreadyDone,
}

impl Issuing {
    pub fn new(pool: PgPool, issuer: Issuer, identity: SigningIdentity, clock: Clock) -> Self {
        Self {
            pool,
            issuer,
            identity,
            clock,
            cafs: Mutex::default(),
        }
    }

    fn today(&self) -> (NaiveDate, chrono::NaiveDateTime) {
        let now = self
            .clock
            .now()
            .with_timezone(&chrono_tz::America::Santiago)
            .naive_local();
        (now.date(), now)
    }

    async fn caf(&self, tx: &mut PgConnection, id: Uuid) -> anyhow::Result<Arc<Caf>> {
        if let Some(caf) = self.cafs.lock().expect("not poisoned").get(&id) {
            return Ok(caf.clone());
        }
        let xml = store::caf_xml(tx, id).await?;
        let caf = Arc::new(Caf::parse(&xml)?);
        self.cafs
            .lock()
            .expect("not poisoned")
            .insert(id, caf.clone());
        Ok(caf)
    }

    /// `order.paid`: the order's boleta or factura.
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
        let id = Uuid::now_v7();
        let fresh = store::insert_pending(
            tx,
            &NewDocument {
                id,
                order_id: &paid.order_id,
                customer_id: &paid.customer_id,
                tipo: content.tipo,
                content: Some(&content),
                refund: None,
            },
        )
        .await?;
        if !fresh {
            return Ok(Outcome::AlreadyDone);
        }
        self.issue(tx, id, content, None, &paid.order_id, None, causation_id)
            .await
    }

    /// `payment.refunded`: a nota de crédito for the order's document.
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
        let id = Uuid::now_v7();
        let fresh = store::insert_pending(
            tx,
            &NewDocument {
                id,
                order_id: &refunded.order_id,
                customer_id: &original.customer_id,
                tipo: TipoDte::NotaCredito,
                content: None,
                refund: Some((&refunded.refund_id, refunded.amount, refunded.full)),
            },
        )
        .await?;
        if !fresh {
            return Ok(Outcome::AlreadyDone);
        }
        self.issue_credit(
            tx,
            id,
            &original,
            refunded.amount,
            refunded.full,
            &refunded.refund_id,
            causation_id,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_credit(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        original: &DocumentRow,
        amount: i64,
        full: bool,
        refund_id: &str,
        causation_id: &str,
    ) -> anyhow::Result<Outcome> {
        let (Some(folio), Some(fecha), Some(content)) =
            (original.folio, original.fch_emis, original.content.as_ref())
        else {
            return Ok(Outcome::Waiting);
        };
        let issued = Issued {
            tipo: TipoDte::try_from(original.tipo_dte).map_err(anyhow::Error::msg)?,
            folio,
            fecha,
            content: content.0.clone(),
        };
        let credit = domain::nota_de_credito(&issued, amount, full);
        self.issue(
            tx,
            id,
            credit,
            Some(original.id),
            &original.order_id,
            Some(refund_id),
            causation_id,
        )
        .await
    }

    /// Allocates a folio and issues the pending document `id`, or leaves it pending.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        content: Content,
        references_document_id: Option<Uuid>,
        order_id: &str,
        refund_id: Option<&str>,
        causation_id: &str,
    ) -> anyhow::Result<Outcome> {
        let Some((folio, caf_id)) = store::allocate_folio(tx, content.tipo).await? else {
            tracing::warn!(%order_id, tipo = content.tipo.code(), "no folio left: the document waits for a CAF");
            metrics::counter!("dte_pending_folio_total", "tipo" => content.tipo.to_string())
                .increment(1);
            return Ok(Outcome::PendingFolio);
        };
        let caf = self.caf(tx, caf_id).await?;
        let (fecha, now) = self.today();
        let dte = document::build_dte(
            &self.issuer,
            &content,
            folio,
            fecha,
            now,
            &Stamp {
                caf_element: &caf.caf_element,
                caf_key: &caf.private_key,
            },
            &self.identity,
        )?;
        let envelope = document::build_envelope(&self.issuer, &[dte], now, &self.identity)?;
        store::mark_issued(
            tx,
            &store::Issue {
                id,
                folio,
                caf_id,
                fch_emis: fecha,
                content: &content,
                references_document_id,
                envelope: &envelope,
            },
        )
        .await?;
        let document_id = id.to_string();
        outbox::enqueue(
            tx,
            NewEvent {
                event_type: "dte.issued",
                aggregate_id: &document_id,
                payload: &DteIssued {
                    document_id: document_id.clone(),
                    order_id: order_id.to_string(),
                    tipo_dte: content.tipo.code(),
                    folio,
                    refund_id: refund_id.unwrap_or_default().to_string(),
                },
                correlation_id: Some(order_id),
                causation_id: Some(causation_id),
            },
        )
        .await?;
        metrics::counter!("dte_issued_total", "tipo" => content.tipo.to_string()).increment(1);
        tracing::info!(%order_id, tipo = content.tipo.code(), folio, "document issued");
        Ok(Outcome::Issued { folio })
    }

    /// Issues documents that were waiting for a folio, oldest first, one transaction each;
    /// returns how many were issued.
    pub async fn issue_pending(&self) -> anyhow::Result<usize> {
        let mut issued = 0;
        for tipo in TipoDte::ALL {
            loop {
                let mut tx = self.pool.begin().await?;
                let rows = store::lock_pending(&mut tx, tipo, 50).await?;
                let mut progressed = false;
                for row in &rows {
                    let outcome = self.issue_pending_row(&mut tx, row).await?;
                    match outcome {
                        Outcome::Issued { .. } => {
                            issued += 1;
                            progressed = true;
                        }
                        Outcome::PendingFolio => break,
                        Outcome::Waiting | Outcome::AlreadyDone => {}
                    }
                }
                tx.commit().await?;
                if !progressed || rows.len() < 50 {
                    break;
                }
            }
        }
        Ok(issued)
    }

    async fn issue_pending_row(
        &self,
        tx: &mut PgConnection,
        row: &DocumentRow,
    ) -> anyhow::Result<Outcome> {
        let causation = format!("pending:{}", row.id);
        match (&row.refund_id, &row.content) {
            (Some(refund_id), _) => {
                let Some(original) = store::sale_document(tx, &row.order_id).await? else {
                    return Ok(Outcome::Waiting);
                };
                self.issue_credit(
                    tx,
                    row.id,
                    &original,
                    row.refund_amount.unwrap_or_default(),
                    row.refund_full.unwrap_or_default(),
                    refund_id,
                    &causation,
                )
                .await
            }
            (None, Some(content)) => {
                self.issue(
                    tx,
                    row.id,
                    content.0.clone(),
                    None,
                    &row.order_id,
                    None,
                    &causation,
                )
                .await
            }
            (None, None) => anyhow::bail!("document {} has no content", row.id),
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
