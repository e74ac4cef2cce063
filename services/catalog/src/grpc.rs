//! The gRPC adapter: proto ↔ domain; every error becomes a `Status` here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::grpc::{Caller, failed_precondition, internal, invalid_argument};
use proto::catalog::v1::{
    CreateProductRequest, DeactivateProductRequest, GetProductRequest, ListProductsRequest,
    ListProductsResponse, Product, ReservationRef, ReserveStockRequest, ReserveStockResponse,
    ReservedLine, SetStockRequest, UpdateProductRequest, catalog_service_server::CatalogService,
};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    CatalogState,
    domain::{self, Cursor, OrderBy},
    store::{
        self, ListQuery, NewProduct, ProductChanges, ProductRow, Reservation, Settlement, StockSet,
    },
};

/// The `CatalogService` implementation.
#[derive(Clone)]
pub struct CatalogGrpc {
    state: Arc<CatalogState>,
}

impl CatalogGrpc {
    /// Serves `state`.
    pub fn new(state: Arc<CatalogState>) -> Self {
        Self { state }
    }
}

fn timestamp(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

/// The public view of a product, with IVA and gross price computed.
pub fn to_proto(row: ProductRow) -> Product {
    Product {
        iva: if row.exempt {
            0
        } else {
            domain::iva(row.net_price)
        },
        gross_price: domain::gross(row.net_price, row.exempt),
        available: row.on_hand - row.reserved,
        sku: row.sku,
        name: row.name,
        description: row.description,
        category: row.category,
        net_price: row.net_price,
        exempt: row.exempt,
        active: row.active,
        on_hand: row.on_hand,
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    }
}

fn sku_of(raw: &str) -> Result<String, Status> {
    domain::parse_sku(raw).map_err(|e| invalid_argument("sku", e))
}

fn not_found(sku: &str) -> Status {
    Status::not_found(format!("no product with SKU {sku}"))
}

fn admin(caller: &Caller) -> Result<(), Status> {
    caller.require_admin().map(|_| ())
}

fn is_default_listing(req: &ListProductsRequest) -> bool {
    req.q.trim().is_empty()
        && req.category.trim().is_empty()
        && req.min_price.is_none()
        && req.max_price.is_none()
        && req.order_by.trim().is_empty()
        && req.page_size == 0
        && req.page_token.is_empty()
        && !req.include_inactive
}

impl CatalogGrpc {
    async fn changed(&self, row: ProductRow) -> Product {
        self.state
            .cache
            .invalidate(std::slice::from_ref(&row.sku))
            .await;
        to_proto(row)
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        if request.get_ref().include_inactive {
            Caller::of(&request).require_admin()?;
        }
        let req = request.into_inner();
        let default_listing = is_default_listing(&req);
        let miss = if default_listing {
            match self.state.cache.first_page().await {
                Ok(page) => return Ok(Response::new(page)),
                Err(miss) => Some(miss),
            }
        } else {
            None
        };
        let order = OrderBy::parse(&req.order_by).map_err(|e| invalid_argument("order_by", e))?;
        let limit =
            domain::parse_page_size(req.page_size).map_err(|e| invalid_argument("page_size", e))?;
        let after = match req.page_token.trim() {
            "" => None,
            token => {
                Some(Cursor::decode(token, order).map_err(|e| invalid_argument("page_token", e))?)
            }
        };
        for (field, value) in [("min_price", req.min_price), ("max_price", req.max_price)] {
            if value.is_some_and(|v| v < 0) {
                return Err(invalid_argument(field, "must not be negative"));
            }
        }
        if let (Some(min), Some(max)) = (req.min_price, req.max_price)
            && min > max
        {
            return Err(invalid_argument("min_price", "must not exceed max_price"));
        }
        let text = Some(req.q.trim().to_string()).filter(|q| !q.is_empty());
        if text.as_ref().is_some_and(|q| q.chars().count() > 200) {
            return Err(invalid_argument("q", "must be at most 200 characters"));
        }
        let query = ListQuery {
            text,
            category: Some(req.category.trim().to_string()).filter(|c| !c.is_empty()),
            min_price: req.min_price,
            max_price: req.max_price,
            order,
            after,
            limit,
            include_inactive: req.include_inactive,
        };
        let (rows, more) = store::list_products(&self.state.pool, &query)
            .await
            .map_err(internal)?;
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => Cursor {
                order,
                key: match order {
                    OrderBy::NameAsc | OrderBy::NameDesc => last.name.to_lowercase(),
                    OrderBy::PriceAsc | OrderBy::PriceDesc => last.gross_price.to_string(),
                },
                sku: last.sku.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        let page = ListProductsResponse {
            products: rows.into_iter().map(to_proto).collect(),
            next_page_token,
        };
        if let Some(miss) = miss {
            self.state.cache.put_first_page(&page, miss).await;
        }
        Ok(Response::new(page))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let sku = sku_of(&request.into_inner().sku)?;
        let miss = match self.state.cache.product(&sku).await {
            Ok(product) => return Ok(Response::new(product)),
            Err(miss) => miss,
        };
        let row = store::find_product(&self.state.pool, &sku)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(&sku))?;
        let product = to_proto(row);
        self.state.cache.put_product(&product, miss).await;
        Ok(Response::new(product))
    }

    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        admin(&Caller::of(&request))?;
        let req = request.into_inner();
        let product = NewProduct {
            sku: sku_of(&req.sku)?,
            name: domain::parse_name(&req.name).map_err(|e| invalid_argument("name", e))?,
            description: req.description.trim().to_string(),
            category: req.category.trim().to_string(),
            net_price: domain::parse_net_price(req.net_price)
                .map_err(|e| invalid_argument("net_price", e))?,
            exempt: req.exempt,
            on_hand: domain::parse_on_hand(req.on_hand)
                .map_err(|e| invalid_argument("on_hand", e))?,
        };
        match store::insert_product(&self.state.pool, &product)
            .await
            .map_err(internal)?
        {
            Some(row) => {
                tracing::info!(sku = %row.sku, "product created");
                Ok(Response::new(self.changed(row).await))
            }
            None => Err(Status::already_exists(format!(
                "a product with SKU {} already exists",
                product.sku
            ))),
        }
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        admin(&Caller::of(&request))?;
        let req = request.into_inner();
        let sku = sku_of(&req.sku)?;
        let changes = ProductChanges {
            name: req
                .name
                .as_deref()
                .map(domain::parse_name)
                .transpose()
                .map_err(|e| invalid_argument("name", e))?,
            description: req.description.map(|d| d.trim().to_string()),
            category: req.category.map(|c| c.trim().to_string()),
            net_price: req
                .net_price
                .map(domain::parse_net_price)
                .transpose()
                .map_err(|e| invalid_argument("net_price", e))?,
            exempt: req.exempt,
            active: req.active,
        };
        let row = store::update_product(&self.state.pool, &sku, &changes)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(&sku))?;
        Ok(Response::new(self.changed(row).await))
    }

    async fn deactivate_product(
        &self,
        request: Request<DeactivateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        admin(&Caller::of(&request))?;
        let sku = sku_of(&request.into_inner().sku)?;
        let changes = ProductChanges {
            active: Some(false),
            ..Default::default()
        };
        let row = store::update_product(&self.state.pool, &sku, &changes)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(&sku))?;
        Ok(Response::new(self.changed(row).await))
    }

    async fn set_stock(
        &self,
        request: Request<SetStockRequest>,
    ) -> Result<Response<Product>, Status> {
        admin(&Caller::of(&request))?;
        let req = request.into_inner();
        let sku = sku_of(&req.sku)?;
        let on_hand =
            domain::parse_on_hand(req.on_hand).map_err(|e| invalid_argument("on_hand", e))?;
        match store::set_stock(&self.state.pool, &sku, on_hand)
            .await
            .map_err(internal)?
        {
            StockSet::Updated(row) => Ok(Response::new(self.changed(row).await)),
            StockSet::NotFound => Err(not_found(&sku)),
            StockSet::BelowReserved(reserved) => Err(failed_precondition(
                "on_hand",
                format!(
                    "{reserved} units are reserved for unpaid orders; on hand cannot go below that"
                ),
            )),
        }
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        let req = request.into_inner();
        let order_id = req.order_id.trim().to_string();
        if order_id.is_empty() || order_id.len() > 100 {
            return Err(invalid_argument(
                "order_id",
                "is required (at most 100 characters)",
            ));
        }
        if req.lines.is_empty() {
            return Err(invalid_argument("lines", "at least one line is required"));
        }
        let mut lines: Vec<store::LineRequest> = Vec::with_capacity(req.lines.len());
        for (i, line) in req.lines.iter().enumerate() {
            let sku = domain::parse_sku(&line.sku)
                .map_err(|e| invalid_argument(&format!("lines[{i}].sku"), e))?;
            if line.quantity <= 0 || line.quantity > 10_000 {
                return Err(invalid_argument(
                    &format!("lines[{i}].quantity"),
                    "must be between 1 and 10000",
                ));
            }
            match lines.iter_mut().find(|l| l.sku == sku) {
                Some(existing) => existing.quantity += line.quantity,
                None => lines.push(store::LineRequest {
                    sku,
                    quantity: line.quantity,
                }),
            }
        }
        match store::reserve(&self.state.pool, &order_id, &lines)
            .await
            .map_err(internal)?
        {
            Reservation::Reserved(reserved) => {
                let skus: Vec<String> = reserved.iter().map(|l| l.sku.clone()).collect();
                self.state.cache.invalidate(&skus).await;
                Ok(Response::new(ReserveStockResponse {
                    lines: reserved
                        .into_iter()
                        .map(|l| ReservedLine {
                            sku: l.sku,
                            quantity: l.quantity,
                            name: l.name,
                            unit_net_price: l.unit_net_price,
                            exempt: l.exempt,
                        })
                        .collect(),
                }))
            }
            Reservation::Short(skus) => {
                metrics::counter!("catalog_reservations_refused_total").increment(1);
                let mut details = ErrorDetails::new();
                // Well-formed, but not what the stock allows now: the gateway answers 422.
                details.set_error_info(
                    platform::grpc::UNPROCESSABLE_REASON,
                    "orderflow",
                    std::collections::HashMap::new(),
                );
                for sku in &skus {
                    details.add_bad_request_violation(
                        "lines.sku",
                        format!("{sku}: not enough stock available"),
                    );
                }
                Err(Status::with_error_details(
                    tonic::Code::FailedPrecondition,
                    format!("not enough stock for {}", skus.join(", ")),
                    details,
                ))
            }
            Reservation::Closed(status) => Err(failed_precondition(
                "order_id",
                format!("this order's reservation is already {status}"),
            )),
        }
    }

    async fn commit_reservation(
        &self,
        request: Request<ReservationRef>,
    ) -> Result<Response<()>, Status> {
        self.settle(request, Settlement::Commit).await
    }

    async fn release_reservation(
        &self,
        request: Request<ReservationRef>,
    ) -> Result<Response<()>, Status> {
        self.settle(request, Settlement::Release).await
    }

    async fn list_held_reservations(
        &self,
        request: Request<proto::catalog::v1::ListHeldReservationsRequest>,
    ) -> Result<Response<proto::catalog::v1::ListHeldReservationsResponse>, Status> {
        let req = request.into_inner();
        let before = req
            .reserved_before
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .ok_or_else(|| invalid_argument("reserved_before", "is required"))?;
        let limit = match req.page_size {
            0 => 100,
            n @ 1..=1000 => i64::from(n),
            _ => return Err(invalid_argument("page_size", "must be between 1 and 1000")),
        };
        let order_ids = store::held_reservations(&self.state.pool, before, limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(
            proto::catalog::v1::ListHeldReservationsResponse { order_ids },
        ))
    }
}

impl CatalogGrpc {
    async fn settle(
        &self,
        request: Request<ReservationRef>,
        how: Settlement,
    ) -> Result<Response<()>, Status> {
        let order_id = request.into_inner().order_id;
        if order_id.trim().is_empty() {
            return Err(invalid_argument("order_id", "is required"));
        }
        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        let skus = store::settle(&mut tx, order_id.trim(), how)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.state.cache.invalidate(&skus).await;
        Ok(Response::new(()))
    }
}
