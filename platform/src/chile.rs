//! Chilean facts every service shares: IVA on integer pesos, and the RUT.

use std::fmt;

/// IVA, in percent.
pub const IVA_PERCENT: i64 = 19;

/// IVA of a net amount in pesos: `round(net × 19 / 100)`, half away from zero (the SII's
/// rule for `IVA = round(MntNeto × 19 / 100)`).
pub fn iva(net: i64) -> i64 {
    let scaled = net * IVA_PERCENT;
    if scaled >= 0 {
        (scaled + 50) / 100
    } else {
        -((-scaled + 50) / 100)
    }
}

/// What a unit costs: net plus IVA, or net alone when exempt.
pub fn gross(net: i64, exempt: bool) -> i64 {
    if exempt { net } else { net + iva(net) }
}

/// A RUT (Rol Único Tributario) whose check digit is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rut {
    number: u32,
    check: char,
}

impl Rut {
    /// Parses `76369187-K`, `76.369.187-k` or `76369187K`; the check digit (módulo 11,
    /// weights 2..7 from the right; 11 → 0, 10 → K) must match.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let cleaned: String = raw
            .trim()
            .chars()
            .filter(|c| *c != '.' && *c != '-')
            .collect::<String>()
            .to_uppercase();
        if cleaned.len() < 2 {
            return Err("must look like 12345678-5".into());
        }
        let (digits, check) = cleaned.split_at(cleaned.len() - 1);
        let check = check.chars().next().expect("one character");
        if digits.is_empty()
            || digits.len() > 8
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !(check.is_ascii_digit() || check == 'K')
        {
            return Err("must look like 12345678-5".into());
        }
        let number: u32 = digits
            .parse()
            .map_err(|_| "must look like 12345678-5".to_string())?;
        if number == 0 {
            return Err("must not be zero".into());
        }
        let expected = Self::check_digit(number);
        if check != expected {
            return Err(format!("has a wrong check digit (expected {expected})"));
        }
        Ok(Self { number, check })
    }

    /// The módulo 11 check digit of `number`.
    pub fn check_digit(number: u32) -> char {
        let mut sum = 0u32;
        let mut n = number;
        let mut weight = 2;
        while n > 0 {
            sum += (n % 10) * weight;
            n /= 10;
            weight = if weight == 7 { 2 } else { weight + 1 };
        }
        match 11 - sum % 11 {
            11 => '0',
            10 => 'K',
            d => char::from_digit(d, 10).expect("a single digit"),
        }
    }

    /// The number without check digit.
    pub fn number(&self) -> u32 {
        self.number
    }
}

impl fmt::Display for Rut {
    /// The SII's spelling: digits, dash, check digit (`76369187-K`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.number, self.check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_vectors_verify() {
        for rut in [
            "60803000-K",
            "97975000-5",
            "7880442-4",
            "12345678-5",
            "76369187-K",
        ] {
            assert_eq!(Rut::parse(rut).unwrap().to_string(), rut);
        }
        assert_eq!(
            Rut::parse("76.369.187-k").unwrap().to_string(),
            "76369187-K"
        );
        assert_eq!(Rut::parse("123456785").unwrap().to_string(), "12345678-5");
    }

    #[test]
    fn wrong_or_malformed_ruts_are_refused() {
        assert!(Rut::parse("12345678-6").unwrap_err().contains("expected 5"));
        for bad in ["", "K", "-5", "abc-5", "123456789-0", "0-0", "12345678-X"] {
            assert!(Rut::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn iva_follows_the_sii_rounding() {
        assert_eq!(iva(571), 108);
        assert_eq!(iva(50), 10);
        assert_eq!(iva(2), 0);
        assert_eq!(gross(1000, false), 1190);
        assert_eq!(gross(1000, true), 1000);
    }
}
