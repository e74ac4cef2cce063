//! The catalog's SQL, against its own schema.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};

use crate::domain::{Cursor, OrderBy};

/// A product as stored.
#[derive(Debug, Clone, FromRow)]
pub struct ProductRow {
    /// Primary key.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Longer text, searched with the name.
    pub description: String,
    /// Free-form category.
    pub category: String,
    /// Unit price before IVA, CLP.
    pub net_price: i64,
    /// IVA-exempt.
    pub exempt: bool,
    /// Listed and orderable.
    pub active: bool,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held for unpaid orders.
    pub reserved: i64,
    /// Net plus IVA (generated column).
    pub gross_price: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "sku, name, description, category, net_price, exempt, active, on_hand, reserved, gross_price, created_at, updated_at";

/// A product to create.
pub struct NewProduct {
    /// Validated SKU.
    pub sku: String,
    /// Validated name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Validated net price.
    pub net_price: i64,
    /// IVA-exempt.
    pub exempt: bool,
    /// Initial stock.
    pub on_hand: i64,
}

/// Inserts a product; `None` when the SKU exists.
pub async fn insert_product(pool: &PgPool, p: &NewProduct) -> anyhow::Result<Option<ProductRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (sku, name, description, category, net_price, exempt, on_hand) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (sku) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(&p.sku)
    .bind(&p.name)
    .bind(&p.description)
    .bind(&p.category)
    .bind(p.net_price)
    .bind(p.exempt)
    .bind(p.on_hand)
    .fetch_optional(pool)
    .await?)
}

/// A product by SKU, active or not.
pub async fn find_product(pool: &PgPool, sku: &str) -> anyhow::Result<Option<ProductRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products WHERE sku = $1"
    )))
    .bind(sku)
    .fetch_optional(pool)
    .await?)
}

/// Fields of a partial update; `None` leaves a field as it is.
#[derive(Default)]
pub struct ProductChanges {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New net price.
    pub net_price: Option<i64>,
    /// New exempt flag.
    pub exempt: Option<bool>,
    /// New active flag.
    pub active: Option<bool>,
}

/// Applies a partial update; `None` when the SKU does not exist.
pub async fn update_product(
    pool: &PgPool,
    sku: &str,
    c: &ProductChanges,
) -> anyhow::Result<Option<ProductRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET name = COALESCE($2, name), description = COALESCE($3, description), \
         category = COALESCE($4, category), net_price = COALESCE($5, net_price), exempt = COALESCE($6, exempt), \
         active = COALESCE($7, active), updated_at = now() WHERE sku = $1 RETURNING {COLUMNS}"
    )))
    .bind(sku)
    .bind(&c.name)
    .bind(&c.description)
    .bind(&c.category)
    .bind(c.net_price)
    .bind(c.exempt)
    .bind(c.active)
    .fetch_optional(pool)
    .await?)
}

/// Outcome of setting stock.
pub enum StockSet {
    /// Done.
    Updated(ProductRow),
    /// No such SKU.
    NotFound,
    /// Below what is reserved for unpaid orders.
    BelowReserved(i64),
}

/// Sets stock on hand, refusing to go below what is reserved.
pub async fn set_stock(pool: &PgPool, sku: &str, on_hand: i64) -> anyhow::Result<StockSet> {
    let updated: Option<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET on_hand = $2, updated_at = now() WHERE sku = $1 AND reserved <= $2 RETURNING {COLUMNS}"
    )))
    .bind(sku)
    .bind(on_hand)
    .fetch_optional(pool)
    .await?;
    Ok(match updated {
        Some(row) => StockSet::Updated(row),
        None => match find_product(pool, sku).await? {
            Some(row) => StockSet::BelowReserved(row.reserved),
            None => StockSet::NotFound,
        },
    })
}

/// A listing query, validated.
pub struct ListQuery {
    /// Full-text search terms.
    pub text: Option<String>,
    /// Exact category.
    pub category: Option<String>,
    /// Gross price at least.
    pub min_price: Option<i64>,
    /// Gross price at most.
    pub max_price: Option<i64>,
    /// Sort order.
    pub order: OrderBy,
    /// Continue after this row.
    pub after: Option<Cursor>,
    /// Rows to return.
    pub limit: i64,
    /// Deactivated products too (the back-office).
    pub include_inactive: bool,
}

/// One page of products (active ones unless `include_inactive`), plus whether more follow.
pub async fn list_products(
    pool: &PgPool,
    q: &ListQuery,
) -> anyhow::Result<(Vec<ProductRow>, bool)> {
    // Keyset pagination: each order has its own seek condition on (key, sku), both in
    // an index, so pages stay stable under inserts and cheap at any depth.
    let (seek, order) = match q.order {
        OrderBy::NameAsc => ("(lower(name), sku) > ($5, $6)", "lower(name), sku"),
        OrderBy::NameDesc => (
            "(lower(name), sku) < ($5, $6)",
            "lower(name) DESC, sku DESC",
        ),
        OrderBy::PriceAsc => ("(gross_price, sku) > ($5::bigint, $6)", "gross_price, sku"),
        OrderBy::PriceDesc => (
            "(gross_price, sku) < ($5::bigint, $6)",
            "gross_price DESC, sku DESC",
        ),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM products WHERE (active OR $8) \
         AND ($1::text IS NULL OR search @@ websearch_to_tsquery('es_unaccent'::regconfig, $1)) \
         AND ($2::text IS NULL OR category = $2) \
         AND ($3::bigint IS NULL OR gross_price >= $3) AND ($4::bigint IS NULL OR gross_price <= $4) \
         AND ($6::text IS NULL OR {seek}) ORDER BY {order} LIMIT $7"
    );
    let mut rows: Vec<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&q.text)
        .bind(&q.category)
        .bind(q.min_price)
        .bind(q.max_price)
        .bind(q.after.as_ref().map(|c| c.key.clone()))
        .bind(q.after.as_ref().map(|c| c.sku.clone()))
        .bind(q.limit + 1)
        .bind(q.include_inactive)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > q.limit;
    rows.truncate(q.limit as usize);
    Ok((rows, more))
}

/// A line to reserve.
pub struct LineRequest {
    /// Validated SKU.
    pub sku: String,
    /// Positive quantity.
    pub quantity: i64,
}

/// A reserved line, as the order snapshots it.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct ReservedLine {
    /// SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Name at reservation time.
    pub name: String,
    /// Net unit price at reservation time.
    pub unit_net_price: i64,
    /// Exempt at reservation time.
    pub exempt: bool,
}

/// Outcome of a reservation.
pub enum Reservation {
    /// Reserved now, or earlier under the same order id (idempotent).
    Reserved(Vec<ReservedLine>),
    /// These SKUs lack stock (or are unknown or inactive); nothing was reserved.
    Short(Vec<String>),
    /// The order's reservation was already committed or released.
    Closed(String),
}

/// Reserves every line or none. Each line is a guarded update (`on_hand - reserved >=
/// quantity`) so concurrent reservations can never oversell; lines are taken in SKU
/// order so two orders cannot deadlock.
pub async fn reserve(
    pool: &PgPool,
    order_id: &str,
    lines: &[LineRequest],
) -> anyhow::Result<Reservation> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query("INSERT INTO reservations (order_id, status) VALUES ($1, 'reserved') ON CONFLICT DO NOTHING")
        .bind(order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !fresh {
        tx.rollback().await?;
        let status: String =
            sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
                .bind(order_id)
                .fetch_one(pool)
                .await?;
        if status != "reserved" && status != "committed" {
            return Ok(Reservation::Closed(status));
        }
        return Ok(Reservation::Reserved(reserved_lines(pool, order_id).await?));
    }
    let mut sorted: Vec<&LineRequest> = lines.iter().collect();
    sorted.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut short = Vec::new();
    let mut reserved = Vec::new();
    for line in sorted {
        let row: Option<(String, i64, bool)> = sqlx::query_as(
            "UPDATE products SET reserved = reserved + $2, updated_at = now() \
             WHERE sku = $1 AND active AND on_hand - reserved >= $2 RETURNING name, net_price, exempt",
        )
        .bind(&line.sku)
        .bind(line.quantity)
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some((name, unit_net_price, exempt)) => reserved.push(ReservedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                name,
                unit_net_price,
                exempt,
            }),
            None => short.push(line.sku.clone()),
        }
    }
    if !short.is_empty() {
        tx.rollback().await?;
        return Ok(Reservation::Short(short));
    }
    for l in &reserved {
        sqlx::query("INSERT INTO reservation_lines (order_id, sku, quantity, name, unit_net_price, exempt) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(order_id)
            .bind(&l.sku)
            .bind(l.quantity)
            .bind(&l.name)
            .bind(l.unit_net_price)
            .bind(l.exempt)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Reservation::Reserved(reserved))
}

async fn reserved_lines(pool: &PgPool, order_id: &str) -> anyhow::Result<Vec<ReservedLine>> {
    Ok(sqlx::query_as("SELECT sku, quantity, name, unit_net_price, exempt FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
        .bind(order_id)
        .fetch_all(pool)
        .await?)
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Paid: the units leave on-hand for good.
    Commit,
    /// Cancelled: the units become available again.
    Release,
}

/// Commits or releases an order's reservation, exactly once: the status moves from
/// `reserved` only once, in the caller's transaction. Returns the SKUs whose stock
/// changed (empty when there was nothing to do: unknown order, or already settled).
pub async fn settle(
    conn: &mut PgConnection,
    order_id: &str,
    how: Settlement,
) -> anyhow::Result<Vec<String>> {
    let status = match how {
        Settlement::Commit => "committed",
        Settlement::Release => "released",
    };
    let moved = sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1 AND status = 'reserved'")
        .bind(order_id)
        .bind(status)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1;
    if !moved {
        return Ok(Vec::new());
    }
    let stock_sql = match how {
        Settlement::Commit => {
            "UPDATE products p SET on_hand = p.on_hand - l.quantity, reserved = p.reserved - l.quantity, updated_at = now() \
             FROM reservation_lines l WHERE l.order_id = $1 AND p.sku = l.sku RETURNING p.sku"
        }
        Settlement::Release => {
            "UPDATE products p SET reserved = p.reserved - l.quantity, updated_at = now() \
             FROM reservation_lines l WHERE l.order_id = $1 AND p.sku = l.sku RETURNING p.sku"
        }
    };
    Ok(sqlx::query_scalar(stock_sql)
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?)
}

/// Orders whose reservations are still held and were made before `before`, oldest first.
pub async fn held_reservations(
    pool: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM reservations WHERE status = 'reserved' AND created_at < $1 \
         ORDER BY created_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The SKUs an order reserved.
pub async fn reserved_skus(pool: &PgPool, order_id: &str) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT sku FROM reservation_lines WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Whether the catalog has no products yet (first start).
pub async fn is_empty(pool: &PgPool) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT NOT EXISTS (SELECT 1 FROM products)")
            .fetch_one(pool)
            .await?,
    )
}
