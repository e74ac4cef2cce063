//! `orderflow invariants`: what must hold across the services' stores once the suite is
//! quiet, whatever crashed or blinked on the way (issue 24's table). Each check reads the
//! owning service's database (`<SERVICE>_DATABASE_URL`, else `DATABASE_URL`) and RabbitMQ,
//! and names what breaks it:
//!
//! - every reservation committed, released or held as its order's state says, and the
//!   stock's reserved counts equal to the held reservations;
//! - every payment settled (captured or failed), a captured one only for a paid order;
//! - every paid order invoiced, with exactly one document;
//! - folios gapless per TipoDTE, no document stuck before it is issued;
//! - the read model equal to the event store;
//! - every outbox drained (and the order relay past the last event);
//! - every dead-letter queue empty.
//!
//! A live suite may be between two steps of a saga: [`check_until`] re-checks until the
//! table passes or the time is up, and reports the last reading.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use platform::config::CommonSettings;
use serde_json::{Value, json};
use sqlx::PgPool;

/// At most this many offenders are named per check.
const NAMED: usize = 5;

/// One invariant and whether it held.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub name: &'static str,
    /// Whether it did.
    pub ok: bool,
    /// What was counted, or what breaks it.
    pub detail: String,
}

/// The table of invariants.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order they were checked.
    pub checks: Vec<Check>,
}

impl Report {
    /// Every invariant held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, problems: Vec<String>, fine: String) {
        let ok = problems.is_empty();
        let detail = if ok {
            fine
        } else {
            let mut shown: Vec<String> = problems.iter().take(NAMED).cloned().collect();
            if problems.len() > NAMED {
                shown.push(format!("and {} more", problems.len() - NAMED));
            }
            shown.join("; ")
        };
        self.checks.push(Check { name, ok, detail });
    }

    /// As JSON: `{"passed": bool, "checks": [{"name", "ok", "detail"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name, "ok": c.ok, "detail": c.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            writeln!(
                f,
                "{}  {:width$}  {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        Ok(())
    }
}

/// Where the services keep their state.
pub struct Stores {
    catalog: PgPool,
    order: PgPool,
    payment: PgPool,
    dte: PgPool,
    schemas: Vec<(&'static str, PgPool)>,
    broker: platform::amqp::Broker,
    queues: Vec<String>,
}

impl Stores {
    /// Opens each service's database (read only use; nothing is created) and RabbitMQ.
    pub async fn open(common: &CommonSettings) -> anyhow::Result<Self> {
        let open = |service: &'static str, schema: &'static str| async move {
            platform::db::connect_existing(common.database_url_for(service).expose(), schema, 2)
                .await
                .with_context(|| format!("the {service} service's database"))
        };
        let catalog = open("catalog", catalog::SCHEMA).await?;
        let order = open("order", order::SCHEMA).await?;
        let payment = open("payment", payment::SCHEMA).await?;
        let dte = open("dte", dte::SCHEMA).await?;
        let iam = open("iam", iam::SCHEMA).await?;
        Ok(Self {
            schemas: vec![
                ("iam", iam),
                ("catalog", catalog.clone()),
                ("payment", payment.clone()),
                ("dte", dte.clone()),
            ],
            catalog,
            order,
            payment,
            dte,
            broker: platform::amqp::Broker::new(common.amqp_url.expose(), &common.amqp_exchange),
            queues: platform::amqp::SERVICE_QUEUES
                .iter()
                .map(|name| format!("{}{name}", common.amqp_queue_prefix))
                .collect(),
        })
    }

    /// Closes the pools.
    pub async fn close(self) {
        for pool in [self.catalog, self.order, self.payment, self.dte] {
            pool.close().await;
        }
        for (_, pool) in self.schemas {
            pool.close().await;
        }
    }
}

/// Checks until every invariant holds or `patience` is spent; the last reading.
pub async fn check_until(stores: &Stores, patience: Duration) -> anyhow::Result<Report> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let report = check(stores).await?;
        if report.passed() || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One reading of every invariant.
pub async fn check(stores: &Stores) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let orders = orders_from_events(&stores.order).await?;
    reservations(stores, &orders, &mut report).await?;
    payments(stores, &orders, &mut report).await?;
    documents(stores, &orders, &mut report).await?;
    folios(stores, &mut report).await?;
    read_model(stores, &orders, &mut report).await?;
    outboxes(stores, &mut report).await?;
    dead_letters(stores, &mut report).await?;
    Ok(report)
}

/// Each order's status, folded from its events (the source of truth).
async fn orders_from_events(pool: &PgPool) -> anyhow::Result<BTreeMap<String, String>> {
    let mut rows = sqlx::query_as::<_, (String, Value)>(
        "SELECT stream_id, data FROM events ORDER BY stream_id, stream_position",
    )
    .fetch(pool);
    let mut orders = BTreeMap::new();
    let mut stream = String::new();
    let mut events = Vec::new();
    let mut fold = |stream: &str, events: &mut Vec<order::domain::OrderEvent>| {
        if !events.is_empty() {
            let status = order::domain::Order::from_events(stream, events.iter())
                .map_or("(no OrderPlaced first)", |o| o.status.as_str());
            orders.insert(stream.to_string(), status.to_string());
            events.clear();
        }
    };
    while let Some((id, data)) = rows.try_next().await? {
        if id != stream {
            fold(&stream, &mut events);
            stream = id;
        }
        events.push(
            order::versions::decode(data)
                .with_context(|| format!("reading the events of {stream}"))?,
        );
    }
    fold(&stream, &mut events);
    Ok(orders)
}

fn is_paid(status: &str) -> bool {
    matches!(status, "paid" | "invoiced" | "refunded")
}

async fn reservations(
    stores: &Stores,
    orders: &BTreeMap<String, String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let held: BTreeMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT order_id, status FROM reservations")
            .fetch_all(&stores.catalog)
            .await?
            .into_iter()
            .collect();
    let mut problems = Vec::new();
    for (order_id, status) in &held {
        let wanted = match orders.get(order_id).map(String::as_str) {
            None => {
                if status == "reserved" {
                    problems.push(format!("{order_id}: held with no order behind it"));
                }
                continue;
            }
            Some("pending_payment") => "reserved",
            Some("cancelled") => "released",
            Some(_) => "committed",
        };
        if status != wanted {
            problems.push(format!(
                "{order_id}: {status}, but its order is {}",
                orders[order_id]
            ));
        }
    }
    for order_id in orders.keys().filter(|id| !held.contains_key(*id)) {
        problems.push(format!("{order_id}: an order with no reservation"));
    }
    let stock: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT p.sku, p.reserved, coalesce(sum(l.quantity) FILTER (WHERE r.status = 'reserved'), 0)::bigint \
         FROM products p \
         LEFT JOIN reservation_lines l ON l.sku = p.sku \
         LEFT JOIN reservations r ON r.order_id = l.order_id \
         GROUP BY p.sku, p.reserved HAVING p.reserved <> coalesce(sum(l.quantity) FILTER (WHERE r.status = 'reserved'), 0)",
    )
    .fetch_all(&stores.catalog)
    .await?;
    for (sku, reserved, lines) in stock {
        problems.push(format!(
            "{sku}: {reserved} units counted reserved, {lines} in held reservations"
        ));
    }
    let counts = count_by(held.values());
    report.push(
        "every reservation ended as its order",
        problems,
        format!("{counts:?}; stock reserved = held reservations"),
    );
    Ok(())
}

async fn payments(
    stores: &Stores,
    orders: &BTreeMap<String, String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rows: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, order_id, status FROM payments")
            .fetch_all(&stores.payment)
            .await?;
    let mut problems = Vec::new();
    let mut captured: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, order_id, status) in &rows {
        match status.as_str() {
            "pending" => problems.push(format!("payment {id} ({order_id}) still pending")),
            "captured" => {
                *captured.entry(order_id).or_default() += 1;
                let order_status = orders.get(order_id).map_or("absent", String::as_str);
                if !is_paid(order_status) {
                    problems.push(format!(
                        "payment {id} captured, but order {order_id} is {order_status}"
                    ));
                }
            }
            _ => {}
        }
    }
    for (order_id, status) in orders.iter().filter(|(_, s)| is_paid(s)) {
        match captured.get(order_id.as_str()).copied().unwrap_or(0) {
            1 => {}
            n => problems.push(format!("{order_id} is {status} with {n} captured payments")),
        }
    }
    let counts = count_by(rows.iter().map(|r| &r.2));
    report.push(
        "every payment settled or failed",
        problems,
        format!("{counts:?}; one capture per paid order"),
    );
    Ok(())
}

async fn documents(
    stores: &Stores,
    orders: &BTreeMap<String, String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rows: Vec<(String, i32, Option<i64>, String)> = sqlx::query_as(
        "SELECT order_id, tipo_dte, folio, status FROM documents WHERE refund_id IS NULL",
    )
    .fetch_all(&stores.dte)
    .await?;
    let mut by_order: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (order_id, tipo, folio, status) in &rows {
        by_order
            .entry(order_id)
            .or_default()
            .push(format!("{tipo}/{}", folio.unwrap_or_default()));
        if matches!(status.as_str(), "pending_folio" | "numbered") {
            problems.push(format!("{order_id}: its {tipo} is still {status}"));
        }
    }
    let mut invoiced = 0;
    for (order_id, status) in orders {
        let docs = by_order.remove(order_id.as_str()).unwrap_or_default();
        if status == "paid" {
            problems.push(format!("{order_id} paid but not invoiced"));
        }
        match (is_paid(status), docs.len()) {
            (true, 1) => invoiced += 1,
            (false, 0) => {}
            (_, n) => problems.push(format!(
                "{order_id} is {status} with {n} documents {docs:?}"
            )),
        }
    }
    for (order_id, docs) in by_order {
        problems.push(format!(
            "documents {docs:?} for {order_id}, which has no order"
        ));
    }
    report.push(
        "every paid order invoiced once",
        problems,
        format!("{invoiced} paid orders, one document each"),
    );
    Ok(())
}

async fn folios(stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    // Every folio of every CAF below the type's next one is some document's.
    let missing: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT c.tipo_dte, f.folio FROM cafs c \
         JOIN folio_counters n ON n.tipo_dte = c.tipo_dte \
         CROSS JOIN LATERAL generate_series(c.folio_from, least(c.folio_to, n.next_folio - 1)) AS f(folio) \
         WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.tipo_dte = c.tipo_dte AND d.folio = f.folio) \
         ORDER BY 1, 2 LIMIT 100",
    )
    .fetch_all(&stores.dte)
    .await?;
    let beyond: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT d.tipo_dte, max(d.folio), max(n.next_folio) FROM documents d \
         JOIN folio_counters n ON n.tipo_dte = d.tipo_dte WHERE d.folio IS NOT NULL \
         GROUP BY d.tipo_dte HAVING max(d.folio) >= max(n.next_folio)",
    )
    .fetch_all(&stores.dte)
    .await?;
    let used: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT tipo_dte, count(*) FROM documents WHERE folio IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&stores.dte)
    .await?;
    let mut problems: Vec<String> = missing
        .iter()
        .map(|(tipo, folio)| format!("TipoDTE {tipo} folio {folio} was never used"))
        .collect();
    problems.extend(beyond.iter().map(|(tipo, max, next)| {
        format!("TipoDTE {tipo} folio {max} used, but the counter is at {next}")
    }));
    report.push(
        "folios gapless",
        problems,
        format!("folios used per TipoDTE {used:?}, none skipped"),
    );
    Ok(())
}

async fn read_model(
    stores: &Stores,
    orders: &BTreeMap<String, String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let projected: BTreeMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT order_id, status FROM order_summaries")
            .fetch_all(&stores.order)
            .await?
            .into_iter()
            .collect();
    let mut problems = Vec::new();
    for (order_id, status) in orders {
        match projected.get(order_id) {
            Some(p) if p == status => {}
            Some(p) => problems.push(format!(
                "{order_id}: {status} in events, {p} in the read model"
            )),
            None => problems.push(format!("{order_id} ({status}) missing from the read model")),
        }
    }
    for order_id in projected.keys().filter(|id| !orders.contains_key(*id)) {
        problems.push(format!("{order_id} in the read model with no events"));
    }
    let counts = count_by(orders.values());
    report.push(
        "read model = event store",
        problems,
        format!("orders by status {counts:?}"),
    );
    Ok(())
}

async fn outboxes(stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut published = 0i64;
    for (service, pool) in &stores.schemas {
        let has_outbox: bool = sqlx::query_scalar("SELECT to_regclass('outbox') IS NOT NULL")
            .fetch_one(pool)
            .await?;
        if !has_outbox {
            continue;
        }
        let (waiting, sent): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE published_at IS NOT NULL) FROM outbox",
        )
        .fetch_one(pool)
        .await?;
        published += sent;
        if waiting > 0 {
            problems.push(format!("{service}: {waiting} events not yet published"));
        }
    }
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e, checkpoints c WHERE c.name = $1 \
         AND (e.transaction_id::text::bigint, e.global_position) > (c.transaction_id::text::bigint, c.global_position)",
    )
    .bind(order::relay::CHECKPOINT)
    .fetch_one(&stores.order)
    .await?;
    if behind > 0 {
        problems.push(format!(
            "order: {behind} events past the relay's checkpoint"
        ));
    }
    report.push(
        "outboxes drained",
        problems,
        format!("{published} outbox events published; the order relay at the last event"),
    );
    Ok(())
}

async fn dead_letters(stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for queue in &stores.queues {
        let n = platform::amqp::dead_letters::count(&stores.broker, queue)
            .await
            .context("counting dead letters")?
            .unwrap_or(0);
        if n > 0 {
            problems.push(format!(
                "{}: {n} messages",
                platform::amqp::dead_letters::dead_queue(queue)
            ));
        }
    }
    report.push(
        "dead-letter queues empty",
        problems,
        format!("{} queues, none dead-lettered", stores.queues.len()),
    );
    Ok(())
}

fn count_by<'a>(values: impl Iterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    counts
}
