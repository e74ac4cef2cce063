//! The order aggregate as plain rules: its events, how they change it, and which
//! commands are legal in which state. No I/O; the service loads an order from its
//! events, asks these functions what to append, and appends with optimistic concurrency.

use chrono::{DateTime, Utc};
use platform::chile::{Rut, iva};
use serde::{Deserialize, Serialize};

/// Which tax document the order gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    /// Boleta electrónica: consumers, buyer optional.
    Boleta,
    /// Factura electrónica: businesses, buyer required.
    Factura,
}

impl DocumentType {
    /// Parses `boleta` (the default when empty) or `factura`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "boleta" => Ok(Self::Boleta),
            "factura" => Ok(Self::Factura),
            other => Err(format!(
                "unknown document type {other:?}: use boleta or factura"
            )),
        }
    }
}

/// The buyer as the tax document names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buyer {
    /// RUT with check digit, as the SII spells it.
    pub rut: Option<String>,
    /// Razón social.
    pub razon_social: String,
    /// Giro (line of business).
    pub giro: String,
    /// Street address.
    pub address: String,
    /// Comuna.
    pub comuna: String,
    /// Where to send the document.
    pub email: String,
}

/// A field that fails validation, named as the API spells it (proto field path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `buyer.rut`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn field_error(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks the buyer for the document type: a factura needs a valid RUT, razón social,
/// giro, address and comuna; a boleta takes the buyer as given (a RUT, if any, must be
/// valid). Returns the buyer normalised.
pub fn validate_buyer(
    document: DocumentType,
    buyer: Option<Buyer>,
) -> Result<Option<Buyer>, FieldError> {
    let Some(mut buyer) = buyer else {
        return match document {
            DocumentType::Boleta => Ok(None),
            DocumentType::Factura => Err(field_error(
                "buyer",
                "a factura needs the buyer's RUT, razón social, giro, address and comuna",
            )),
        };
    };
    for text in [
        &mut buyer.razon_social,
        &mut buyer.giro,
        &mut buyer.address,
        &mut buyer.comuna,
        &mut buyer.email,
    ] {
        *text = text.trim().to_string();
    }
    buyer.rut = match buyer
        .rut
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(raw) => Some(
            Rut::parse(raw)
                .map_err(|e| field_error("buyer.rut", e))?
                .to_string(),
        ),
        None => None,
    };
    if document == DocumentType::Factura {
        if buyer.rut.is_none() {
            return Err(field_error("buyer.rut", "is required for a factura"));
        }
        for (field, value) in [
            ("buyer.razon_social", &buyer.razon_social),
            ("buyer.giro", &buyer.giro),
            ("buyer.address", &buyer.address),
            ("buyer.comuna", &buyer.comuna),
        ] {
            if value.is_empty() {
                return Err(field_error(field, "is required for a factura"));
            }
        }
    }
    Ok(Some(buyer))
}

/// A line as ordered, with name and price snapshotted from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// SKU.
    pub sku: String,
    /// Name at order time.
    pub name: String,
    /// Units.
    pub quantity: i64,
    /// Net unit price at order time, CLP.
    pub unit_net_price: i64,
    /// IVA-exempt.
    pub exempt: bool,
}

impl Line {
    /// quantity × unit price.
    pub fn line_net(&self) -> i64 {
        self.quantity * self.unit_net_price
    }
}

/// Order totals in integer pesos, as the tax document states them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of taxable lines (MntNeto).
    pub net: i64,
    /// Sum of exempt lines (MntExe).
    pub exempt_total: i64,
    /// IVA on the taxable sum, rounded once (not per line).
    pub iva: i64,
    /// net + exempt + IVA (MntTotal).
    pub total: i64,
}

/// Totals of `lines`.
pub fn totals(lines: &[Line]) -> Totals {
    let net: i64 = lines.iter().filter(|l| !l.exempt).map(Line::line_net).sum();
    let exempt_total: i64 = lines.iter().filter(|l| l.exempt).map(Line::line_net).sum();
    let iva = iva(net);
    Totals {
        net,
        exempt_total,
        iva,
        total: net + exempt_total + iva,
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Placed, stock reserved, waiting for payment.
    PendingPayment,
    /// Captured.
    Paid,
    /// Its tax document was issued.
    Invoiced,
    /// Cancelled before payment.
    Cancelled,
    /// Refunded in full.
    Refunded,
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The customer cancelled.
    Customer,
    /// The payment was declined.
    PaymentFailed,
    /// Nobody paid before the reservation expired.
    PaymentTimeout,
}

/// The events of an order stream (stored as JSON, `type` + fields).
// OrderPlaced is much larger than the others; events are built once and serialised
// straight away, so boxing it would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// Placed with its snapshot.
    OrderPlaced {
        /// Who ordered.
        customer_id: String,
        /// Lines with snapshotted names and prices.
        lines: Vec<Line>,
        /// Buyer, if given.
        buyer: Option<Buyer>,
        /// Boleta or factura.
        document_type: DocumentType,
        /// Totals.
        totals: Totals,
        /// When it was placed.
        placed_at: DateTime<Utc>,
        /// When an unpaid order expires.
        expires_at: DateTime<Utc>,
        /// The prices' currency, ISO 4217 (v2; every earlier order was `CLP`).
        currency: String,
    },
    /// Payment captured.
    OrderPaid {
        /// The payment.
        payment_id: String,
        /// Amount captured.
        amount: i64,
    },
    /// Cancelled.
    OrderCancelled {
        /// Why.
        reason: CancelReason,
    },
    /// The tax document was issued.
    OrderInvoiced {
        /// DTE service's document id.
        document_id: String,
        /// TipoDTE.
        tipo_dte: i32,
        /// Folio.
        folio: i64,
    },
    /// The SII judged the order's tax document (accepted, accepted with objections,
    /// rejected).
    DocumentSettled {
        /// DTE service's document id.
        document_id: String,
        /// The SII's verdict, as the DTE service names it.
        sii_status: String,
    },
    /// Money went back (partially or in full).
    OrderRefunded {
        /// The refund.
        refund_id: String,
        /// This refund's amount.
        amount: i64,
        /// All refunds so far.
        total_refunded: i64,
    },
}

/// An order, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Stream id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Current status.
    pub status: Status,
    /// Lines.
    pub lines: Vec<Line>,
    /// Buyer.
    pub buyer: Option<Buyer>,
    /// Document type.
    pub document_type: DocumentType,
    /// Totals.
    pub totals: Totals,
    /// Refunded so far.
    pub refunded: i64,
    /// The capturing payment.
    pub payment_id: Option<String>,
    /// Refunds applied (their ids), so a redelivered refund changes nothing.
    pub refund_ids: Vec<String>,
    /// The issued document, if any.
    pub document_id: Option<String>,
    /// The SII's verdict on that document, once known (absent from older snapshots).
    #[serde(default)]
    pub document_status: Option<String>,
    /// Why it was cancelled.
    pub cancel_reason: Option<CancelReason>,
    /// When an unpaid order expires.
    pub expires_at: DateTime<Utc>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When its last event was recorded (the loader sets it; rules never read it).
    pub updated_at: DateTime<Utc>,
    /// Stream version: events applied.
    pub version: i64,
}

/// A command that the order's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} an order that is {status:?}")]
pub struct IllegalTransition {
    /// What was asked.
    pub command: &'static str,
    /// The state it was in.
    pub status: Status,
}

impl OrderEvent {
    /// The event's type name, as stored and as serialised in its `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderPaid { .. } => "OrderPaid",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderInvoiced { .. } => "OrderInvoiced",
            Self::DocumentSettled { .. } => "DocumentSettled",
            Self::OrderRefunded { .. } => "OrderRefunded",
        }
    }
}

impl Status {
    /// The API's name for it (`pending_payment`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Invoiced => "invoiced",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// Parses an API status name.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::PendingPayment,
            Self::Paid,
            Self::Invoiced,
            Self::Cancelled,
            Self::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

impl CancelReason {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::PaymentFailed => "payment_failed",
            Self::PaymentTimeout => "payment_timeout",
        }
    }
}

impl DocumentType {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Boleta => "boleta",
            Self::Factura => "factura",
        }
    }
}

impl Order {
    /// Folds a stream's events (the first must be `OrderPlaced`).
    pub fn from_events<'a>(
        id: &str,
        events: impl IntoIterator<Item = &'a OrderEvent>,
    ) -> Option<Self> {
        let mut events = events.into_iter();
        let OrderEvent::OrderPlaced {
            customer_id,
            lines,
            buyer,
            document_type,
            totals,
            expires_at,
            placed_at,
            // Recorded with the order; every price here is in pesos (the aggregate has no
            // rule that depends on it yet).
            currency: _,
        } = events.next()?
        else {
            return None;
        };
        let mut order = Order {
            id: id.to_string(),
            customer_id: customer_id.clone(),
            status: Status::PendingPayment,
            lines: lines.clone(),
            buyer: buyer.clone(),
            document_type: *document_type,
            totals: *totals,
            refunded: 0,
            payment_id: None,
            refund_ids: Vec::new(),
            document_id: None,
            document_status: None,
            cancel_reason: None,
            expires_at: *expires_at,
            placed_at: *placed_at,
            updated_at: *placed_at,
            version: 1,
        };
        for event in events {
            order.apply(event);
        }
        Some(order)
    }

    /// Applies one later event.
    pub fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced { .. } => {}
            OrderEvent::OrderPaid { payment_id, .. } => {
                self.status = Status::Paid;
                self.payment_id = Some(payment_id.clone());
            }
            OrderEvent::OrderCancelled { reason } => {
                self.status = Status::Cancelled;
                self.cancel_reason = Some(*reason);
            }
            OrderEvent::OrderInvoiced { document_id, .. } => {
                if self.status == Status::Paid {
                    self.status = Status::Invoiced;
                }
                self.document_id = Some(document_id.clone());
            }
            OrderEvent::DocumentSettled {
                document_id,
                sii_status,
            } => {
                self.document_id.get_or_insert_with(|| document_id.clone());
                self.document_status = Some(sii_status.clone());
            }
            OrderEvent::OrderRefunded {
                refund_id,
                total_refunded,
                ..
            } => {
                self.refunded = *total_refunded;
                self.refund_ids.push(refund_id.clone());
                if self.refunded >= self.totals.total {
                    self.status = Status::Refunded;
                }
            }
        }
        self.version += 1;
    }

    /// A captured payment: pays a pending order. Repeating it for the same payment is a
    /// no-op (no events); any other payment of a paid order is illegal.
    pub fn pay(&self, payment_id: &str, amount: i64) -> Result<Vec<OrderEvent>, IllegalTransition> {
        match self.status {
            Status::PendingPayment if amount == self.totals.total => {
                Ok(vec![OrderEvent::OrderPaid {
                    payment_id: payment_id.into(),
                    amount,
                }])
            }
            _ if self.payment_id.as_deref() == Some(payment_id) => Ok(vec![]),
            status => Err(IllegalTransition {
                command: "pay",
                status,
            }),
        }
    }

    /// Cancels a pending order. A customer may cancel any time before payment; the
    /// timeout only once `now` has passed `expires_at`.
    pub fn cancel(
        &self,
        reason: CancelReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<OrderEvent>, IllegalTransition> {
        match self.status {
            Status::PendingPayment
                if reason == CancelReason::PaymentTimeout && now < self.expires_at =>
            {
                Err(IllegalTransition {
                    command: "expire",
                    status: self.status,
                })
            }
            Status::PendingPayment => Ok(vec![OrderEvent::OrderCancelled { reason }]),
            Status::Cancelled => Ok(vec![]),
            status => Err(IllegalTransition {
                command: "cancel",
                status,
            }),
        }
    }

    /// Records the issued tax document (idempotent by document id).
    pub fn invoice(
        &self,
        document_id: &str,
        tipo_dte: i32,
        folio: i64,
    ) -> Result<Vec<OrderEvent>, IllegalTransition> {
        let known = self.document_id.as_deref();
        match self.status {
            // Still paid with this document already known: the SII's verdict on it (a later
            // message) was applied first, as the consumer may take the two in either order.
            // The order is invoiced all the same.
            Status::Paid if known.is_none() || known == Some(document_id) => {
                Ok(vec![OrderEvent::OrderInvoiced {
                    document_id: document_id.into(),
                    tipo_dte,
                    folio,
                }])
            }
            _ if known == Some(document_id) => Ok(vec![]),
            Status::Refunded if known.is_none() => Ok(vec![OrderEvent::OrderInvoiced {
                document_id: document_id.into(),
                tipo_dte,
                folio,
            }]),
            status => Err(IllegalTransition {
                command: "invoice",
                status,
            }),
        }
    }

    /// Records the SII's verdict on the order's tax document (idempotent; a verdict on
    /// another document of the order, a nota de crédito, changes nothing here).
    pub fn settle_document(
        &self,
        document_id: &str,
        sii_status: &str,
    ) -> Result<Vec<OrderEvent>, IllegalTransition> {
        if self
            .document_id
            .as_deref()
            .is_some_and(|d| d != document_id)
            || self.document_status.as_deref() == Some(sii_status)
        {
            return Ok(vec![]);
        }
        match self.status {
            Status::Paid | Status::Invoiced | Status::Refunded => {
                Ok(vec![OrderEvent::DocumentSettled {
                    document_id: document_id.into(),
                    sii_status: sii_status.into(),
                }])
            }
            status => Err(IllegalTransition {
                command: "settle the document of",
                status,
            }),
        }
    }

    /// Records a refund (idempotent by refund id); never more than was paid.
    pub fn refund(
        &self,
        refund_id: &str,
        amount: i64,
    ) -> Result<Vec<OrderEvent>, IllegalTransition> {
        if self.refund_ids.iter().any(|r| r == refund_id) {
            return Ok(vec![]);
        }
        match self.status {
            Status::Paid | Status::Invoiced
                if amount > 0 && self.refunded + amount <= self.totals.total =>
            {
                Ok(vec![OrderEvent::OrderRefunded {
                    refund_id: refund_id.into(),
                    amount,
                    total_refunded: self.refunded + amount,
                }])
            }
            status => Err(IllegalTransition {
                command: "refund",
                status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64, price: i64, exempt: bool) -> Line {
        Line {
            sku: sku.into(),
            name: sku.into(),
            quantity,
            unit_net_price: price,
            exempt,
        }
    }

    fn placed(lines: Vec<Line>) -> Order {
        let now = Utc::now();
        let event = OrderEvent::OrderPlaced {
            customer_id: "c-1".into(),
            totals: totals(&lines),
            lines,
            buyer: None,
            document_type: DocumentType::Boleta,
            placed_at: now,
            expires_at: now + chrono::Duration::minutes(15),
            currency: "CLP".into(),
        };
        Order::from_events("o-1", [&event]).unwrap()
    }

    fn applied(mut order: Order, events: Vec<OrderEvent>) -> Order {
        for e in &events {
            order.apply(e);
        }
        order
    }

    #[test]
    fn the_siis_verdict_on_the_orders_document_is_recorded_once() {
        let order = placed(vec![line("A", 1, 1000, false)]);
        // Unpaid: no document to judge.
        assert!(order.settle_document("d-1", "accepted").is_err());
        let order = applied(order.clone(), order.pay("p-1", 1190).unwrap());
        let order = applied(order.clone(), order.invoice("d-1", 39, 7).unwrap());
        let settled = order.settle_document("d-1", "accepted").unwrap();
        assert_eq!(settled.len(), 1);
        let order = applied(order, settled);
        assert_eq!(order.document_status.as_deref(), Some("accepted"));
        // Redelivered: nothing new. Another document of the order (a nota de crédito):
        // not this order's verdict.
        assert!(order.settle_document("d-1", "accepted").unwrap().is_empty());
        assert!(order.settle_document("d-2", "rejected").unwrap().is_empty());
        // A snapshot from before the field existed still loads.
        let mut old = serde_json::to_value(&order).unwrap();
        old.as_object_mut().unwrap().remove("document_status");
        let loaded: Order = serde_json::from_value(old).unwrap();
        assert_eq!(loaded.document_status, None);
    }

    #[test]
    fn the_verdict_applied_before_the_issue_still_leaves_the_order_invoiced() {
        // dte.accepted and dte.issued of one document, taken in the wrong order.
        let order = placed(vec![line("A", 1, 1000, false)]);
        let order = applied(order.clone(), order.pay("p-1", 1190).unwrap());
        let order = applied(
            order.clone(),
            order.settle_document("d-1", "accepted").unwrap(),
        );
        assert_eq!(order.status, Status::Paid);
        let order = applied(order.clone(), order.invoice("d-1", 39, 7).unwrap());
        assert_eq!(order.status, Status::Invoiced);
        assert_eq!(order.document_status.as_deref(), Some("accepted"));
        assert_eq!(order.invoice("d-1", 39, 7).unwrap(), vec![], "once");
        assert!(
            order.invoice("d-2", 39, 8).is_err(),
            "one document per order"
        );
    }

    #[test]
    fn totals_round_iva_once_on_the_taxable_sum() {
        // Three lines of 1 peso: per-line IVA would round 0.19 to 0 three times.
        let t = totals(&[line("A", 3, 1, false), line("B", 1, 1000, true)]);
        assert_eq!(
            t,
            Totals {
                net: 3,
                exempt_total: 1000,
                iva: 1,
                total: 1004
            }
        );
        let t = totals(&[line("C", 2, 2990, false), line("D", 1, 4201, false)]);
        assert_eq!((t.net, t.iva, t.total), (10181, 1934, 12115));
    }

    #[test]
    fn a_factura_needs_a_complete_buyer_with_a_valid_rut() {
        assert_eq!(validate_buyer(DocumentType::Boleta, None), Ok(None));
        assert_eq!(
            validate_buyer(DocumentType::Factura, None)
                .unwrap_err()
                .field,
            "buyer"
        );
        let complete = Buyer {
            rut: Some("76.369.187-k".into()),
            razon_social: "Comercial Los Andes SpA".into(),
            giro: "Venta al por menor".into(),
            address: "Av. Providencia 1234".into(),
            comuna: "Providencia".into(),
            email: String::new(),
        };
        let ok = validate_buyer(DocumentType::Factura, Some(complete.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(ok.rut.as_deref(), Some("76369187-K"), "normalised");
        let bad_rut = Buyer {
            rut: Some("76369187-5".into()),
            ..complete.clone()
        };
        assert_eq!(
            validate_buyer(DocumentType::Factura, Some(bad_rut))
                .unwrap_err()
                .field,
            "buyer.rut"
        );
        let no_giro = Buyer {
            giro: "  ".into(),
            ..complete.clone()
        };
        assert_eq!(
            validate_buyer(DocumentType::Factura, Some(no_giro))
                .unwrap_err()
                .field,
            "buyer.giro"
        );
        let boleta_rut = Buyer {
            rut: Some("1-1".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_buyer(DocumentType::Boleta, Some(boleta_rut))
                .unwrap_err()
                .field,
            "buyer.rut"
        );
        assert!(DocumentType::parse("nota").is_err());
    }

    #[test]
    fn the_happy_path_pay_invoice_then_refund_in_full() {
        let order = placed(vec![line("A", 2, 1000, false)]);
        assert_eq!(order.totals.total, 2380);
        let order = applied(order.clone(), order.pay("p-1", 2380).unwrap());
        assert_eq!(order.status, Status::Paid);
        assert_eq!(
            order.pay("p-1", 2380).unwrap(),
            vec![],
            "a redelivered capture changes nothing"
        );
        assert!(
            order.pay("p-2", 2380).is_err(),
            "a second payment is refused"
        );
        let order = applied(order.clone(), order.invoice("d-1", 39, 7).unwrap());
        assert_eq!(order.status, Status::Invoiced);
        assert_eq!(order.invoice("d-1", 39, 7).unwrap(), vec![]);
        let order = applied(order.clone(), order.refund("r-1", 1000).unwrap());
        assert_eq!(
            (order.status, order.refunded),
            (Status::Invoiced, 1000),
            "partial keeps it paid"
        );
        assert!(order.refund("r-2", 1381).is_err(), "never more than paid");
        assert_eq!(order.refund("r-1", 1000).unwrap(), vec![]);
        let order = applied(order.clone(), order.refund("r-2", 1380).unwrap());
        assert_eq!(order.status, Status::Refunded);
        assert_eq!(order.version, 5);
    }

    #[test]
    fn illegal_transitions_are_rejected() {
        let order = placed(vec![line("A", 1, 1000, false)]);
        assert!(
            order.pay("p-1", 999).is_err(),
            "the amount must be the total"
        );
        assert!(
            order.invoice("d-1", 39, 1).is_err(),
            "no document before payment"
        );
        assert!(order.refund("r-1", 10).is_err(), "no refund before payment");
        let cancelled = applied(
            order.clone(),
            order.cancel(CancelReason::Customer, Utc::now()).unwrap(),
        );
        assert_eq!(cancelled.status, Status::Cancelled);
        assert_eq!(
            cancelled.pay("p-1", 1190).unwrap_err().status,
            Status::Cancelled
        );
        let paid = applied(order.clone(), order.pay("p-1", 1190).unwrap());
        assert!(
            paid.cancel(CancelReason::Customer, Utc::now()).is_err(),
            "a paid order cannot be cancelled"
        );
    }

    #[test]
    fn an_unpaid_order_expires_only_after_its_deadline() {
        let order = placed(vec![line("A", 1, 1000, false)]);
        assert!(
            order
                .cancel(
                    CancelReason::PaymentTimeout,
                    order.expires_at - chrono::Duration::seconds(1)
                )
                .is_err()
        );
        let expired = order
            .cancel(CancelReason::PaymentTimeout, order.expires_at)
            .unwrap();
        assert_eq!(
            expired,
            vec![OrderEvent::OrderCancelled {
                reason: CancelReason::PaymentTimeout
            }]
        );
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = OrderEvent::OrderRefunded {
            refund_id: "r".into(),
            amount: 5,
            total_refunded: 5,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.type_name());
        for status in [Status::PendingPayment, Status::Refunded] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                status.as_str(),
                "API names match the stored ones"
            );
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(serde_json::from_value::<OrderEvent>(json).unwrap(), event);
    }
}
