//! The gRPC adapter: proto ↔ domain, catalog reservation, and every error as a `Status`.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use platform::{
    amqp::dead_letters,
    clock::Clock,
    grpc::{Caller, internal, invalid_argument, time_field},
};
use proto::{
    catalog::v1::{
        ReservationRef, ReserveStockRequest, StockLine,
        catalog_service_client::CatalogServiceClient,
    },
    order::v1::{
        self as pb, CancelOrderRequest, GetOrderRequest, ListOrderEventsRequest,
        ListOrderEventsResponse, ListOrdersRequest, ListOrdersResponse, PayableOrder,
        PlaceOrderRequest, order_service_server::OrderService,
    },
};
use sqlx::{FromRow, PgPool};
use tonic::{Code, Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    commands::{self, CommandError, Metadata},
    domain::{
        self, Buyer, CancelReason, DocumentType, Line, Order, OrderEvent, Status as OrderStatus,
    },
    event_store,
    projector::LIVE,
};

/// Lines per order at most.
pub const MAX_LINES: usize = 100;

/// What the handlers share.
pub struct OrderState {
    /// The `orders` schema.
    pub pool: PgPool,
    /// The catalog, for reservations.
    pub catalog: CatalogServiceClient<Channel>,
    /// Deadline of one catalog call.
    pub catalog_timeout: Duration,
    /// How long an unpaid order lives.
    pub payment_timeout: Duration,
    /// Snapshot every this many events.
    pub snapshot_interval: i64,
    /// What "now" is.
    pub clock: Clock,
    /// Mints the credential of this role's calls to the catalog.
    pub minter: platform::identity::Minter,
    /// Who waits for an order to change (`GetOrder` with `wait_for`).
    pub changes: Arc<crate::watch::Changes>,
    /// The broker, where `ListDeadLetterQueues` counts.
    pub broker: platform::amqp::Broker,
    /// The suite's work queues, by their full names (`ListDeadLetterQueues`).
    pub work_queues: Vec<String>,
}

/// The broker could not be asked (the answer says so; the log says why).
fn broker_unavailable(e: anyhow::Error) -> Status {
    tracing::warn!(
        error = format!("{e:#}"),
        "dead letters: the broker cannot be reached"
    );
    Status::unavailable("the message broker cannot be reached")
}

/// Ids that are not in the queue are named (nothing was changed); anything else is the
/// broker's trouble.
fn dead_letter_refusal(e: anyhow::Error) -> Status {
    match e.downcast_ref::<dead_letters::DeadLetterError>() {
        Some(dead_letters::DeadLetterError::Unknown { queue, ids }) => Status::not_found(format!(
            "not in {queue}: {} (nothing was changed)",
            ids.join(", ")
        )),
        None => broker_unavailable(e),
    }
}

impl OrderGrpc {
    /// The work queue the caller named, as ListDeadLetterQueues names them.
    fn work_queue(&self, name: &str) -> Result<&str, Status> {
        self.state
            .work_queues
            .iter()
            .find(|q| *q == name)
            .map(String::as_str)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no such queue; the suite's are {}",
                    self.state.work_queues.join(", ")
                ))
            })
    }
}

#[derive(FromRow)]
struct SummaryCounts {
    placed: i64,
    paid: i64,
    invoiced: i64,
    cancelled: i64,
    refunded: i64,
    revenue: i64,
}

/// The `OrderService` implementation.
#[derive(Clone)]
pub struct OrderGrpc {
    state: Arc<OrderState>,
}

impl OrderGrpc {
    /// Serves `state`.
    pub fn new(state: Arc<OrderState>) -> Self {
        Self { state }
    }
}

fn timestamp(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn proto_line(l: &Line) -> pb::OrderLine {
    pb::OrderLine {
        sku: l.sku.clone(),
        name: l.name.clone(),
        quantity: l.quantity,
        unit_net_price: l.unit_net_price,
        exempt: l.exempt,
        line_net: l.line_net(),
    }
}

/// The API's view of an order.
pub fn to_proto(order: &Order) -> pb::Order {
    pb::Order {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        status: order.status.as_str().into(),
        lines: order.lines.iter().map(proto_line).collect(),
        buyer: order.buyer.as_ref().map(|b| pb::Buyer {
            rut: b.rut.clone().unwrap_or_default(),
            razon_social: b.razon_social.clone(),
            giro: b.giro.clone(),
            address: b.address.clone(),
            comuna: b.comuna.clone(),
            email: b.email.clone(),
        }),
        document_type: order.document_type.as_str().into(),
        net: order.totals.net,
        exempt_total: order.totals.exempt_total,
        iva: order.totals.iva,
        total: order.totals.total,
        refunded_amount: order.refunded,
        cancel_reason: order
            .cancel_reason
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        created_at: timestamp(order.placed_at),
        updated_at: timestamp(order.updated_at),
        expires_at: timestamp(order.expires_at),
        version: order.version,
        document_status: order.document_status.clone().unwrap_or_default(),
    }
}

fn command_status(e: CommandError) -> Status {
    match e {
        CommandError::NotFound(id) => not_found(&id),
        CommandError::Illegal(illegal) => Status::aborted(illegal.to_string()),
        CommandError::Conflict(_) => Status::aborted(
            "the order changed while this request was applied; reload it and try again",
        ),
        CommandError::Other(e) => internal(e),
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("no order {id}"))
}

/// The buyer as sent, or `None` when every field is empty.
fn buyer_of(buyer: Option<pb::Buyer>) -> Option<Buyer> {
    let b = buyer?;
    let rut = Some(b.rut).filter(|r| !r.trim().is_empty());
    let buyer = Buyer {
        rut,
        razon_social: b.razon_social,
        giro: b.giro,
        address: b.address,
        comuna: b.comuna,
        email: b.email,
    };
    (buyer != Buyer::default()).then_some(buyer)
}

/// How a placement's append ended (short of an error).
enum Placement {
    /// OrderPlaced (and the customer's key, if any) committed.
    Recorded(Box<Order>),
    /// A concurrent placement with the same Idempotency-Key committed first; nothing was.
    KeyTaken,
}

/// The audience of this role's calls to the catalog.
const CATALOG_SERVICE: &str = "orderflow.catalog.v1.CatalogService";

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted
    )
}

impl OrderGrpc {
    /// Reserves the lines for `order_id`. Safe to repeat: the catalog reserves once per
    /// order id and answers a repeat with the first snapshot.
    async fn reserve(
        &self,
        caller: &Caller,
        order_id: &str,
        lines: &[StockLine],
    ) -> Result<Vec<Line>, Status> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let reserved = platform::telemetry::grpc_client_call(
                &format!("/{CATALOG_SERVICE}/ReserveStock"),
                |metadata| {
                    let mut request = Request::new(ReserveStockRequest {
                        order_id: order_id.to_string(),
                        lines: lines.to_vec(),
                    });
                    *request.metadata_mut() = metadata;
                    self.state
                        .minter
                        .authorize(&mut request, CATALOG_SERVICE, caller);
                    request.set_timeout(self.state.catalog_timeout);
                    let mut catalog = self.state.catalog.clone();
                    async move { catalog.reserve_stock(request).await }
                },
            )
            .await;
            match reserved {
                Ok(reply) => {
                    return Ok(reply
                        .into_inner()
                        .lines
                        .into_iter()
                        .map(|l| Line {
                            sku: l.sku,
                            name: l.name,
                            quantity: l.quantity,
                            unit_net_price: l.unit_net_price,
                            exempt: l.exempt,
                        })
                        .collect());
                }
                Err(status) if retryable(status.code()) && attempt < 3 => {
                    tracing::warn!(%order_id, attempt, code = ?status.code(), "catalog reservation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                // Unknown is a broken connection; Cancelled, a catalog that stopped
                // (draining on SIGTERM) before it answered: neither is a verdict.
                Err(status)
                    if retryable(status.code())
                        || matches!(status.code(), Code::Unknown | Code::Cancelled) =>
                {
                    tracing::error!(%order_id, code = ?status.code(), message = status.message(), "catalog unavailable");
                    return Err(Status::unavailable(
                        "stock cannot be reserved right now; try again shortly",
                    ));
                }
                // The catalog's verdict on the request (unknown SKU, not enough stock):
                // passed on with its field details.
                Err(status) => {
                    return Err(Status::with_details(
                        status.code(),
                        status.message(),
                        status.details().to_vec().into(),
                    ));
                }
            }
        }
    }

    /// The order already placed by `user` with Idempotency-Key `key`, if any; the key
    /// used for a different request is refused (the gateway answers 422).
    async fn placed_with(
        &self,
        user: Uuid,
        key: &str,
        request: &serde_json::Value,
    ) -> Result<Option<Order>, Status> {
        let row: Option<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT order_id, request FROM place_requests \
             WHERE customer_id = $1 AND idempotency_key = $2",
        )
        .bind(user.to_string())
        .bind(key)
        .fetch_optional(&self.state.pool)
        .await
        .map_err(internal)?;
        let Some((order_id, first)) = row else {
            return Ok(None);
        };
        if &first != request {
            return Err(platform::grpc::unprocessable(
                "Idempotency-Key",
                "was already used for a different order",
            ));
        }
        let mut conn = self.state.pool.acquire().await.map_err(internal)?;
        let order = commands::load(&mut conn, &order_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(&order_id))?;
        Ok(Some(order))
    }

    /// Loads an order the caller may see (its owner, or an admin); others get NOT_FOUND,
    /// so nobody learns which order ids exist.
    async fn visible_order(&self, caller: &Caller, id: &str) -> Result<Order, Status> {
        let user = caller.require_user()?;
        let id = id.trim();
        if id.is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
        let mut conn = self.state.pool.acquire().await.map_err(internal)?;
        let order = commands::load(&mut conn, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(id))?;
        if order.customer_id != user.to_string() && !caller.has_role("admin") {
            return Err(not_found(id));
        }
        Ok(order)
    }
}

#[derive(FromRow)]
struct SummaryRow {
    state: serde_json::Value,
    created_at: DateTime<Utc>,
    order_id: String,
}

#[derive(FromRow)]
struct LineRow {
    order_id: String,
    sku: String,
    name: String,
    quantity: i64,
    unit_net_price: i64,
    exempt: bool,
}

fn page_token(created_at: DateTime<Utc>, order_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{order_id}", created_at.timestamp_micros()))
}

fn parse_page_token(token: &str) -> Result<(DateTime<Utc>, String), Status> {
    let bad = || invalid_argument("page_token", "is not a token this API issued");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.to_string()))
}

/// proto `Struct` from JSON (the event history shows data and metadata as JSON objects).
fn to_struct(value: serde_json::Value) -> Option<prost_types::Struct> {
    fn convert(value: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.into_iter().map(convert).collect(),
            }),
            serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
                fields: map.into_iter().map(|(k, v)| (k, convert(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match convert(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request);
        let user = caller.require_user()?;
        let key = platform::grpc::idempotency_key(request.metadata())?;
        let req = request.into_inner();
        let document_type = DocumentType::parse(&req.document_type)
            .map_err(|e| invalid_argument("document_type", e))?;
        if req.lines.is_empty() {
            return Err(invalid_argument("lines", "at least one line is required"));
        }
        if req.lines.len() > MAX_LINES {
            return Err(invalid_argument(
                "lines",
                format!("at most {MAX_LINES} lines per order"),
            ));
        }
        let mut lines: Vec<StockLine> = Vec::with_capacity(req.lines.len());
        for (i, line) in req.lines.iter().enumerate() {
            let sku = line.sku.trim().to_ascii_uppercase();
            if sku.is_empty() || sku.len() > 64 {
                return Err(invalid_argument(
                    &format!("lines[{i}].sku"),
                    "is required (at most 64 characters)",
                ));
            }
            if line.quantity <= 0 || line.quantity > 10_000 {
                return Err(invalid_argument(
                    &format!("lines[{i}].quantity"),
                    "must be between 1 and 10000",
                ));
            }
            // The same SKU twice is one line (as the catalog reserves it).
            match lines.iter_mut().find(|l| l.sku == sku) {
                Some(existing) => existing.quantity += line.quantity,
                None => lines.push(StockLine {
                    sku,
                    quantity: line.quantity,
                }),
            }
        }
        let buyer = domain::validate_buyer(document_type, buyer_of(req.buyer))
            .map_err(|e| invalid_argument(&e.field, e.problem))?;
        // What makes two placements the same request (a retry) under one key.
        let request_seen = serde_json::json!({
            "lines": lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect::<Vec<_>>(),
            "documentType": document_type,
            "buyer": buyer,
        });
        if let Some(key) = &key
            && let Some(order) = self.placed_with(user, key, &request_seen).await?
        {
            return Ok(Response::new(to_proto(&order)));
        }

        let order_id = Uuid::now_v7().to_string();
        let mut reserved = self.reserve(&caller, &order_id, &lines).await?;
        let reserved_at = std::time::Instant::now();
        // The customer's order of lines, whatever order the catalog answered in.
        reserved.sort_by_key(|r| lines.iter().position(|l| l.sku == r.sku));
        let placed_at = self.state.clock.now();
        let payment_timeout =
            chrono::Duration::from_std(self.state.payment_timeout).map_err(internal)?;
        let placed = OrderEvent::OrderPlaced {
            customer_id: user.to_string(),
            totals: domain::totals(&reserved),
            lines: reserved,
            buyer,
            document_type,
            placed_at,
            expires_at: placed_at + payment_timeout,
            // The catalog prices in pesos; a shop in another currency would say so here.
            currency: "CLP".into(),
        };
        let metadata = Metadata::new(&order_id, &order_id, Some(user.to_string()));
        let appended = async {
            // Past the deadline the reservation sweeper may already count this
            // placement as dead: give the stock back instead of recording it.
            if reserved_at.elapsed() > crate::sweeper::PLACE_DEADLINE {
                return Err(CommandError::Other(anyhow::anyhow!(
                    "the placement took longer than {:?}",
                    crate::sweeper::PLACE_DEADLINE
                )));
            }
            let mut tx = self.state.pool.begin().await?;
            let order = commands::append(
                &mut tx,
                self.state.snapshot_interval,
                &order_id,
                None,
                std::slice::from_ref(&placed),
                &metadata,
            )
            .await?;
            if let Some(key) = &key {
                let recorded = sqlx::query(
                    "INSERT INTO place_requests (customer_id, idempotency_key, order_id, request) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(user.to_string())
                .bind(key)
                .bind(&order_id)
                .bind(&request_seen)
                .execute(&mut *tx)
                .await?;
                if recorded.rows_affected() == 0 {
                    return Ok(Placement::KeyTaken);
                }
            }
            tx.commit().await?;
            Ok::<_, CommandError>(Placement::Recorded(Box::new(order)))
        }
        .await;
        match appended {
            Ok(Placement::Recorded(order)) => {
                metrics::counter!("orders_placed_total").increment(1);
                tracing::info!(%order_id, total = order.totals.total, "order placed");
                Ok(Response::new(to_proto(&order)))
            }
            not_recorded => {
                // Not recorded: give the stock back (best effort; the sweeper releases
                // it should this fail).
                let released = platform::telemetry::grpc_client_call(
                    &format!("/{CATALOG_SERVICE}/ReleaseReservation"),
                    |metadata| {
                        let mut release = Request::new(ReservationRef {
                            order_id: order_id.clone(),
                        });
                        *release.metadata_mut() = metadata;
                        release.set_timeout(self.state.catalog_timeout);
                        self.state
                            .minter
                            .authorize(&mut release, CATALOG_SERVICE, &caller);
                        let mut catalog = self.state.catalog.clone();
                        async move { catalog.release_reservation(release).await }
                    },
                )
                .await;
                if let Err(status) = released {
                    tracing::error!(%order_id, ?status, "could not release the reservation of an order that was not recorded");
                }
                match (not_recorded, &key) {
                    (Err(e), _) => Err(command_status(e)),
                    // A concurrent retry with the same key got there first: its order is
                    // the answer.
                    (Ok(_), Some(key)) => self
                        .placed_with(user, key, &request_seen)
                        .await?
                        .map(|order| Response::new(to_proto(&order)))
                        .ok_or_else(|| Status::aborted("placed concurrently; try again")),
                    (Ok(_), None) => unreachable!("only a keyed placement can find its key taken"),
                }
            }
        }
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = Caller::of(&request);
        let user = caller.require_user()?;
        let req = request.into_inner();
        let customer = match (caller.has_role("admin"), req.customer_id.trim()) {
            (true, "") => None,
            (true, id) => Some(id.to_string()),
            (false, "") => Some(user.to_string()),
            (false, id) if id == user.to_string() => Some(user.to_string()),
            (false, _) => {
                return Err(Status::permission_denied(
                    "only admins list other customers' orders",
                ));
            }
        };
        let status = match req.status.trim() {
            "" => None,
            raw => Some(
                OrderStatus::parse(raw)
                    .ok_or_else(|| {
                        invalid_argument(
                            "status",
                            "use pending_payment, paid, invoiced, cancelled or refunded",
                        )
                    })?
                    .as_str(),
            ),
        };
        let from = time_field("created_from", &req.created_from)?;
        let to = time_field("created_to", &req.created_to)?;
        let page_size = match req.page_size {
            0 => 20,
            n @ 1..=100 => n as i64,
            _ => return Err(invalid_argument("page_size", "must be between 1 and 100")),
        };
        let after = match req.page_token.trim() {
            "" => None,
            token => Some(parse_page_token(token)?),
        };

        let mut query = sqlx::QueryBuilder::new(format!(
            "SELECT state, created_at, order_id FROM {} WHERE true",
            LIVE.summaries
        ));
        if let Some(customer) = &customer {
            query
                .push(" AND customer_id = ")
                .push_bind(customer.clone());
        }
        if let Some(status) = status {
            query.push(" AND status = ").push_bind(status);
        }
        if let Some(from) = from {
            query.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            query.push(" AND created_at < ").push_bind(to);
        }
        if let Some((at, id)) = after {
            query
                .push(" AND (created_at, order_id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, order_id DESC LIMIT ")
            .push_bind(page_size + 1);
        let mut rows: Vec<SummaryRow> = query
            .build_query_as()
            .fetch_all(&self.state.pool)
            .await
            .map_err(internal)?;
        let next_page_token = if rows.len() as i64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|r| page_token(r.created_at, &r.order_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let ids: Vec<&str> = rows.iter().map(|r| r.order_id.as_str()).collect();
        let lines: Vec<LineRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT order_id, sku, name, quantity, unit_net_price, exempt FROM {} \
             WHERE order_id = ANY($1) ORDER BY order_id, line_no",
            LIVE.lines
        )))
        .bind(&ids)
        .fetch_all(&self.state.pool)
        .await
        .map_err(internal)?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in rows {
            let order: Order = serde_json::from_value(row.state).map_err(internal)?;
            let mut proto = to_proto(&order);
            proto.lines = lines
                .iter()
                .filter(|l| l.order_id == row.order_id)
                .map(|l| {
                    proto_line(&Line {
                        sku: l.sku.clone(),
                        name: l.name.clone(),
                        quantity: l.quantity,
                        unit_net_price: l.unit_net_price,
                        exempt: l.exempt,
                    })
                })
                .collect();
            orders.push(proto);
        }
        Ok(Response::new(ListOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn summarize_orders(
        &self,
        request: Request<pb::SummarizeOrdersRequest>,
    ) -> Result<Response<pb::OrderSummary>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let from = time_field("created_from", &req.created_from)?;
        let to = time_field("created_to", &req.created_to)?;
        // An order that was paid has a payment id in its state whatever came after
        // (invoiced, refunded); an invoiced one has its document id.
        let row: SummaryCounts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) AS placed, \
               count(*) FILTER (WHERE state->>'payment_id' IS NOT NULL) AS paid, \
               count(*) FILTER (WHERE state->>'document_id' IS NOT NULL) AS invoiced, \
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
               count(*) FILTER (WHERE status = 'refunded') AS refunded, \
               COALESCE(sum(total - refunded_amount) FILTER (WHERE state->>'payment_id' IS NOT NULL), 0)::bigint AS revenue \
             FROM {} WHERE ($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2)",
            LIVE.summaries
        )))
        .bind(from)
        .bind(to)
        .fetch_one(&self.state.pool)
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::OrderSummary {
            placed: row.placed,
            paid: row.paid,
            invoiced: row.invoiced,
            cancelled: row.cancelled,
            refunded: row.refunded,
            revenue: row.revenue,
        }))
    }

    async fn list_dead_letter_queues(
        &self,
        request: Request<pb::ListDeadLetterQueuesRequest>,
    ) -> Result<Response<pb::ListDeadLetterQueuesResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let mut queues = Vec::with_capacity(self.state.work_queues.len());
        for queue in &self.state.work_queues {
            let counted = dead_letters::count(&self.state.broker, queue)
                .await
                .map_err(broker_unavailable)?;
            // A queue never declared (its service has not started yet) holds nothing.
            queues.push(pb::DeadLetterQueue {
                queue: queue.clone(),
                messages: counted.unwrap_or(0) as i64,
            });
        }
        Ok(Response::new(pb::ListDeadLetterQueuesResponse { queues }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let queue = self.work_queue(&req.queue)?;
        let limit = if req.page_size == 0 {
            100
        } else {
            req.page_size as usize
        };
        let letters = dead_letters::list(&self.state.broker, queue, limit)
            .await
            .map_err(broker_unavailable)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            messages: letters
                .into_iter()
                .map(|l| pb::DeadLetter {
                    id: l.id,
                    event_type: l.event_type,
                    aggregate_id: l.aggregate_id,
                    attempts: l.attempts,
                    reason: l.reason,
                })
                .collect(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let admin = Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let queue = self.work_queue(&req.queue)?;
        let ids = match (req.all, req.ids.is_empty()) {
            (true, true) => None,
            (false, false) => Some(req.ids.as_slice()),
            (true, false) => {
                return Err(invalid_argument("ids", "must be empty with all"));
            }
            (false, true) => {
                return Err(platform::grpc::unprocessable(
                    "ids",
                    "name the letters to replay, or ask for all",
                ));
            }
        };
        let replayed = dead_letters::replay(&self.state.broker, queue, ids)
            .await
            .map_err(dead_letter_refusal)?;
        tracing::info!(%admin, queue, replayed, "dead letters replayed");
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: replayed as i64,
        }))
    }

    async fn drop_dead_letters(
        &self,
        request: Request<pb::DropDeadLettersRequest>,
    ) -> Result<Response<pb::DropDeadLettersResponse>, Status> {
        let admin = Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let queue = self.work_queue(&req.queue)?;
        let dropped = dead_letters::drop_letters(&self.state.broker, queue, &req.ids)
            .await
            .map_err(dead_letter_refusal)?;
        tracing::warn!(%admin, queue, dropped, ids = ?req.ids, "dead letters dropped for good");
        Ok(Response::new(pb::DropDeadLettersResponse {
            dropped: dropped as i64,
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request);
        let Some(known) = request.get_ref().wait_for else {
            let order = self.visible_order(&caller, &request.get_ref().id).await?;
            return Ok(Response::new(to_proto(&order)));
        };
        // Subscribed before the read: a change committed in between is not missed.
        let changes = self.state.changes.clone();
        let mut notices = changes.subscribe();
        let mut order = self.visible_order(&caller, &request.get_ref().id).await?;
        if order.version != known {
            return Ok(Response::new(to_proto(&order)));
        }
        let user = caller.require_user()?;
        let _waiting = changes.enter(user).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "waitFor: at most {} orders may be waited for at once",
                changes.per_user
            ))
        })?;
        let deadline = tokio::time::Instant::now() + changes.max_wait;
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(id) if *id != *order.id => continue,
                    // This order, or notices missed (lagging): read it again.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        order = self.visible_order(&caller, &order.id).await?;
                        if order.version != known {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(Response::new(to_proto(&order)))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request);
        let order = self.visible_order(&caller, &request.get_ref().id).await?;
        let now = self.state.clock.now();
        let metadata = Metadata::new(&order.id, &order.id, caller.user_id.map(|u| u.to_string()));
        let mut conn = self.state.pool.acquire().await.map_err(internal)?;
        let order = commands::execute(
            &mut conn,
            self.state.snapshot_interval,
            &order.id,
            &metadata,
            |o| o.cancel(CancelReason::Customer, now),
        )
        .await
        .map_err(command_status)?;
        Ok(Response::new(to_proto(&order)))
    }

    async fn list_order_events(
        &self,
        request: Request<ListOrderEventsRequest>,
    ) -> Result<Response<ListOrderEventsResponse>, Status> {
        let caller = Caller::of(&request);
        let order = self.visible_order(&caller, &request.get_ref().id).await?;
        let events = event_store::read_stream(&self.state.pool, &order.id, 0)
            .await
            .map_err(internal)?;
        // Each in today's shape, whatever version it was stored with.
        let events = events
            .into_iter()
            .map(|e| {
                Ok(pb::OrderEvent {
                    stream_position: e.stream_position,
                    global_position: e.global_position,
                    r#type: e.event_type,
                    occurred_at: timestamp(e.created_at),
                    data: to_struct(crate::versions::upcast(e.data)?),
                    metadata: to_struct(e.metadata),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(internal)?;
        Ok(Response::new(ListOrderEventsResponse { events }))
    }

    async fn get_payable_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<PayableOrder>, Status> {
        let id = request.get_ref().id.trim();
        if id.is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
        let mut conn = self.state.pool.acquire().await.map_err(internal)?;
        let order = commands::load(&mut conn, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(PayableOrder {
            id: order.id,
            customer_id: order.customer_id,
            status: order.status.as_str().into(),
            total: order.totals.total,
            refunded_amount: order.refunded,
        }))
    }
}
