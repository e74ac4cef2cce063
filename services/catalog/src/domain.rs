//! Catalog rules as plain values: SKUs, prices with IVA, listing queries. No I/O.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

pub use platform::chile::{gross, iva};

/// Validates a SKU: uppercase letters and digits in dash-separated groups, ≤ 64 chars.
pub fn parse_sku(raw: &str) -> Result<String, String> {
    let sku = raw.trim();
    let well_formed = !sku.is_empty()
        && sku.len() <= 64
        && sku.split('-').all(|g| {
            !g.is_empty()
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
    if well_formed {
        Ok(sku.to_string())
    } else {
        Err(
            "must be uppercase letters and digits in dash-separated groups, e.g. CAFE-GRANO-250"
                .into(),
        )
    }
}

/// A product name: trimmed, 1 to 200 characters.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > 200 => Err("must be at most 200 characters".into()),
        _ => Ok(name.to_string()),
    }
}

/// A net unit price in pesos: positive, and small enough that totals cannot overflow.
pub fn parse_net_price(raw: i64) -> Result<i64, String> {
    if raw <= 0 {
        Err("must be a positive number of pesos".into())
    } else if raw > 1_000_000_000_000 {
        Err("is implausibly large".into())
    } else {
        Ok(raw)
    }
}

/// Stock on hand: zero or more.
pub fn parse_on_hand(raw: i64) -> Result<i64, String> {
    if raw < 0 {
        Err("must not be negative".into())
    } else {
        Ok(raw)
    }
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderBy {
    /// Name A→Z (the default).
    NameAsc,
    /// Name Z→A.
    NameDesc,
    /// Cheapest first (gross price).
    PriceAsc,
    /// Dearest first.
    PriceDesc,
}

impl OrderBy {
    /// Parses `name`, `-name`, `price`, `-price` (empty: name).
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "" | "name" => Ok(Self::NameAsc),
            "-name" => Ok(Self::NameDesc),
            "price" => Ok(Self::PriceAsc),
            "-price" => Ok(Self::PriceDesc),
            other => Err(format!(
                "unknown sort key {other:?}: use name, -name, price or -price"
            )),
        }
    }
}

/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: i32 = 100;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// Validates a page size (0 means the default).
pub fn parse_page_size(raw: i32) -> Result<i64, String> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE.into()),
        n if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n.into()),
        _ => Err(format!("must be between 1 and {MAX_PAGE_SIZE}")),
    }
}

/// Where the next page starts: the last row's sort key and SKU (keyset pagination, so
/// inserts between pages neither repeat nor skip rows). Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The order the cursor was made for.
    pub order: OrderBy,
    /// Lower-cased name, or gross price as a decimal string.
    pub key: String,
    /// The last SKU.
    pub sku: String,
}

impl Cursor {
    /// The page token.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    /// Reads a page token made for `order`.
    pub fn decode(token: &str, order: OrderBy) -> Result<Self, String> {
        let invalid = || "is not a token this API issued for this order".to_string();
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.order != order {
            return Err(invalid());
        }
        if matches!(order, OrderBy::PriceAsc | OrderBy::PriceDesc)
            && cursor.key.parse::<i64>().is_err()
        {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_uppercase_groups() {
        assert_eq!(parse_sku(" CAFE-GRANO-250 ").unwrap(), "CAFE-GRANO-250");
        for bad in [
            "",
            "cafe",
            "CAFE--GRANO",
            "-CAFE",
            "CAFE-",
            "CAFÉ",
            "CAFE GRANO",
            &"A".repeat(65),
        ] {
            assert!(parse_sku(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prices_names_and_stock_are_checked() {
        assert!(parse_net_price(0).is_err());
        assert!(parse_net_price(-5).is_err());
        assert_eq!(parse_net_price(4990), Ok(4990));
        assert!(parse_name("   ").is_err());
        assert!(parse_on_hand(-1).is_err());
    }

    #[test]
    fn sort_keys_and_page_sizes() {
        assert_eq!(OrderBy::parse("").unwrap(), OrderBy::NameAsc);
        assert_eq!(OrderBy::parse("-price").unwrap(), OrderBy::PriceDesc);
        assert!(OrderBy::parse("rating").is_err());
        assert_eq!(parse_page_size(0), Ok(20));
        assert!(parse_page_size(101).is_err());
        assert!(parse_page_size(-1).is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_orders() {
        let c = Cursor {
            order: OrderBy::PriceAsc,
            key: "1190".into(),
            sku: "A-1".into(),
        };
        assert_eq!(Cursor::decode(&c.encode(), OrderBy::PriceAsc).unwrap(), c);
        assert!(Cursor::decode(&c.encode(), OrderBy::NameAsc).is_err());
        assert!(Cursor::decode("garbage!", OrderBy::NameAsc).is_err());
    }
}
