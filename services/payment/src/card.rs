//! Card checks done before any provider is asked: number (Luhn), expiry, CVC. Errors
//! name the field as the API spells it (`card.number`, …). Nothing here keeps or logs the
//! number: [`CardSummary`] is all that leaves this module.

use chrono::{Datelike, NaiveDate};

/// A card as sent, checked.
#[derive(Clone)]
pub struct Card {
    /// Digits only.
    pub number: String,
    /// 1–12.
    pub exp_month: u32,
    /// Four digits.
    pub exp_year: i32,
    /// 3 or 4 digits.
    pub cvc: String,
    /// Cardholder name.
    pub holder: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the number or CVC.
        let summary = self.summary();
        write!(f, "Card({} •••• {})", summary.brand, summary.last4)
    }
}

/// What may be stored and shown: brand and last four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSummary {
    /// visa, mastercard, amex, …
    pub brand: &'static str,
    /// Last four digits.
    pub last4: String,
}

/// A field that fails validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    /// e.g. `card.number`.
    pub field: &'static str,
    /// What is wrong.
    pub problem: &'static str,
}

fn error(field: &'static str, problem: &'static str) -> CardError {
    CardError { field, problem }
}

/// The Luhn (mod 10) check every card number carries.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn brand_of(number: &str) -> &'static str {
    let prefix2: u32 = number[..2].parse().unwrap_or(0);
    let prefix4: u32 = number[..4].parse().unwrap_or(0);
    match () {
        _ if number.starts_with('4') => "visa",
        _ if (51..=55).contains(&prefix2) || (2221..=2720).contains(&prefix4) => "mastercard",
        _ if prefix2 == 34 || prefix2 == 37 => "amex",
        _ if number.starts_with("6011") || prefix2 == 65 => "discover",
        _ => "unknown",
    }
}

impl Card {
    /// Checks a card against `today`: digits and Luhn, an expiry not in the past, a 3- or
    /// 4-digit CVC (4 for amex).
    pub fn parse(
        number: &str,
        exp_month: i32,
        exp_year: i32,
        cvc: &str,
        holder: &str,
        today: NaiveDate,
    ) -> Result<Self, CardError> {
        let number: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if number.is_empty() {
            return Err(error("card.number", "is required"));
        }
        if !number.bytes().all(|b| b.is_ascii_digit()) || !(12..=19).contains(&number.len()) {
            return Err(error("card.number", "must be 12 to 19 digits"));
        }
        if !luhn_valid(&number) {
            return Err(error(
                "card.number",
                "is not a valid card number (check digit)",
            ));
        }
        if !(1..=12).contains(&exp_month) {
            return Err(error("card.exp_month", "must be between 1 and 12"));
        }
        if !(2000..=2100).contains(&exp_year) {
            return Err(error("card.exp_year", "must be a four-digit year"));
        }
        if (exp_year, exp_month as u32) < (today.year(), today.month()) {
            return Err(error("card.exp_year", "the card has expired"));
        }
        let cvc = cvc.trim();
        let cvc_len = if brand_of(&number) == "amex" { 4 } else { 3 };
        if cvc.len() != cvc_len || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(
                "card.cvc",
                if cvc_len == 4 {
                    "must be 4 digits"
                } else {
                    "must be 3 digits"
                },
            ));
        }
        Ok(Self {
            number,
            exp_month: exp_month as u32,
            exp_year,
            cvc: cvc.to_string(),
            holder: holder.trim().to_string(),
        })
    }

    /// Brand and last four.
    pub fn summary(&self) -> CardSummary {
        CardSummary {
            brand: brand_of(&self.number),
            last4: self.number[self.number.len() - 4..].to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn the_sandbox_cards_pass_and_a_typo_fails_the_check_digit() {
        for n in [
            "4242424242424242",
            "4000000000000002",
            "4000000000009995",
            "4000000000000119",
            "4000000000003220",
            "5555555555554444",
        ] {
            assert!(luhn_valid(n), "{n}");
        }
        assert!(!luhn_valid("4242424242424241"));
        let err = Card::parse("4242 4242 4242 4241", 12, 2030, "123", "", today())
            .err()
            .unwrap();
        assert_eq!(err.field, "card.number");
    }

    #[test]
    fn expiry_and_cvc_are_checked_and_only_brand_and_last_four_leave() {
        let card = Card::parse("4242-4242-4242-4242", 11, 2026, "123", " Ana ", today()).unwrap();
        assert_eq!(
            card.summary(),
            CardSummary {
                brand: "visa",
                last4: "4242".into()
            }
        );
        assert_eq!(format!("{card:?}"), "Card(visa •••• 4242)");
        let expired = Card::parse("4242424242424242", 10, 2026, "123", "", today());
        assert_eq!(expired.err().unwrap().field, "card.exp_year");
        let month = Card::parse("4242424242424242", 13, 2030, "123", "", today());
        assert_eq!(month.err().unwrap().field, "card.exp_month");
        let cvc = Card::parse("4242424242424242", 1, 2030, "12a", "", today());
        assert_eq!(cvc.err().unwrap().field, "card.cvc");
        let amex = Card::parse("378282246310005", 1, 2030, "123", "", today());
        assert_eq!(amex.err().unwrap().field, "card.cvc", "amex has 4");
        assert_eq!(
            Card::parse("5555555555554444", 1, 2030, "123", "", today())
                .unwrap()
                .summary()
                .brand,
            "mastercard"
        );
    }
}
