//! The rules of DTE issuing, with no I/O: which document a sale gets, its totals, and what a
//! nota de crédito says about the document it corrects.

use std::fmt;

use chrono::NaiveDate;
use platform::chile::{Rut, iva};
use serde::{Deserialize, Serialize};

/// A TipoDTE this service issues or accepts CAFs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub enum TipoDte {
    /// 33: factura electrónica.
    Factura,
    /// 34: factura no afecta o exenta electrónica.
    FacturaExenta,
    /// 39: boleta electrónica.
    Boleta,
    /// 41: boleta exenta electrónica.
    BoletaExenta,
    /// 56: nota de débito electrónica.
    NotaDebito,
    /// 61: nota de crédito electrónica.
    NotaCredito,
}

impl TipoDte {
    /// Every type, in code order.
    pub const ALL: [TipoDte; 6] = [
        TipoDte::Factura,
        TipoDte::FacturaExenta,
        TipoDte::Boleta,
        TipoDte::BoletaExenta,
        TipoDte::NotaDebito,
        TipoDte::NotaCredito,
    ];

    /// The SII code.
    pub fn code(self) -> i32 {
        match self {
            TipoDte::Factura => 33,
            TipoDte::FacturaExenta => 34,
            TipoDte::Boleta => 39,
            TipoDte::BoletaExenta => 41,
            TipoDte::NotaDebito => 56,
            TipoDte::NotaCredito => 61,
        }
    }

    /// The type of an SII code, when this service handles it.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Boletas travel in `EnvioBOLETA`, every other type in `EnvioDTE`.
    pub fn is_boleta(self) -> bool {
        matches!(self, TipoDte::Boleta | TipoDte::BoletaExenta)
    }

    /// Exempt documents carry no IVA at all.
    pub fn is_exempt(self) -> bool {
        matches!(self, TipoDte::FacturaExenta | TipoDte::BoletaExenta)
    }
}

impl From<TipoDte> for i32 {
    fn from(tipo: TipoDte) -> Self {
        tipo.code()
    }
}

impl TryFrom<i32> for TipoDte {
    type Error = String;

    fn try_from(code: i32) -> Result<Self, Self::Error> {
        Self::from_code(code).ok_or_else(|| format!("{code} is not a supported TipoDTE"))
    }
}

impl fmt::Display for TipoDte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The receptor of a boleta whose buyer is not identified (SII rule).
pub const RUT_SIN_RECEPTOR: &str = "66666666-6";

/// The SII's own RUT: the `RutReceptor` of every envelope.
pub const RUT_SII: &str = "60803000-K";

/// The company issuing documents (settings, see [`crate::IssuerSettings`]).
#[derive(Debug, Clone)]
pub struct Issuer {
    pub rut: Rut,
    pub razon_social: String,
    pub giro: String,
    /// Código de actividad económica.
    pub acteco: u32,
    pub address: String,
    pub comuna: String,
    pub ciudad: String,
    /// The RUT of the person whose certificate signs (`RutEnvia`).
    pub rut_envia: Rut,
    /// Resolution authorising the company to issue DTEs.
    pub fch_resol: NaiveDate,
    pub nro_resol: u32,
}

/// Who a document is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receptor {
    pub rut: String,
    pub razon_social: String,
    pub giro: String,
    pub address: String,
    pub comuna: String,
}

impl Receptor {
    /// The anonymous final consumer of a boleta.
    pub fn sin_rut() -> Self {
        Self {
            rut: RUT_SIN_RECEPTOR.into(),
            razon_social: "Consumidor final".into(),
            giro: String::new(),
            address: String::new(),
            comuna: String::new(),
        }
    }
}

/// One line of a document, amounts net of IVA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub code: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub exempt: bool,
    pub amount: i64,
}

/// A document's totals, integer pesos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub net: i64,
    pub exempt: i64,
    pub iva: i64,
    pub total: i64,
}

impl Totals {
    /// Totals of net lines: IVA rounded once, on the taxable sum.
    pub fn of_items(items: &[Item]) -> Self {
        let net = items.iter().filter(|i| !i.exempt).map(|i| i.amount).sum();
        let exempt = items.iter().filter(|i| i.exempt).map(|i| i.amount).sum();
        let iva = iva(net);
        Self {
            net,
            exempt,
            iva,
            total: net + exempt + iva,
        }
    }

    /// Totals of a gross amount with IVA included: `neto = round(total / 1.19)`, `IVA =
    /// total − neto` (680 → 571 + 109), half away from zero.
    pub fn of_gross(total: i64) -> Self {
        let net = (total * 200 + 119) / 238;
        Self {
            net,
            exempt: 0,
            iva: total - net,
            total,
        }
    }
}

/// How a nota de crédito corrects the document it refers to (`CodRef`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodRef {
    /// 1: cancels the document (a full refund).
    Anula,
    /// 3: corrects amounts (a partial refund).
    CorrigeMontos,
}

impl CodRef {
    pub fn code(self) -> u8 {
        match self {
            CodRef::Anula => 1,
            CodRef::CorrigeMontos => 3,
        }
    }
}

/// A reference from one document to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referencia {
    pub tipo: TipoDte,
    pub folio: i64,
    pub fecha: NaiveDate,
    pub cod_ref: CodRef,
    pub razon: String,
}

/// Everything a document says except its folio, date and stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub tipo: TipoDte,
    pub receptor: Receptor,
    pub items: Vec<Item>,
    pub totals: Totals,
    pub referencia: Option<Referencia>,
}

/// A sale as `order.paid` describes it.
#[derive(Debug, Clone)]
pub struct Sale {
    pub receptor: Option<Receptor>,
    pub items: Vec<Item>,
}

/// The document a paid order gets: a buyer with a RUT gets a factura (34 when every line is
/// exempt), anyone else a boleta (41 when every line is exempt). Totals are recomputed from
/// the lines with the SII's rounding, which is how the order service computed the amount
/// charged.
pub fn document_for_sale(sale: Sale) -> Content {
    let all_exempt = sale.items.iter().all(|i| i.exempt);
    let (tipo, receptor) = match sale.receptor {
        Some(r) if all_exempt => (TipoDte::FacturaExenta, r),
        Some(r) => (TipoDte::Factura, r),
        None if all_exempt => (TipoDte::BoletaExenta, Receptor::sin_rut()),
        None => (TipoDte::Boleta, Receptor::sin_rut()),
    };
    let totals = Totals::of_items(&sale.items);
    Content {
        tipo,
        receptor,
        items: sale.items,
        totals,
        referencia: None,
    }
}

/// A document already issued, as a nota de crédito needs to know it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub tipo: TipoDte,
    pub folio: i64,
    pub fecha: NaiveDate,
    pub content: Content,
}

/// The nota de crédito (61) for a refund of `amount` pesos of `original`: a full refund
/// cancels it (CodRef 1, same lines and totals); a partial one corrects amounts (CodRef 3,
/// one line), the refund split between exempt and taxable in the original's proportion and
/// the taxable part treated as gross.
pub fn nota_de_credito(original: &Issued, amount: i64, full: bool) -> Content {
    let referencia = |cod_ref, razon: &str| Referencia {
        tipo: original.tipo,
        folio: original.folio,
        fecha: original.fecha,
        cod_ref,
        razon: razon.into(),
    };
    if full || amount >= original.content.totals.total {
        return Content {
            tipo: TipoDte::NotaCredito,
            receptor: original.content.receptor.clone(),
            items: original.content.items.clone(),
            totals: original.content.totals,
            referencia: Some(referencia(
                CodRef::Anula,
                "Anula documento: reembolso total",
            )),
        };
    }
    let original_totals = original.content.totals;
    let exempt_part = if original_totals.total == 0 {
        0
    } else {
        // Integer proportion, rounded half up.
        (2 * amount * original_totals.exempt + original_totals.total) / (2 * original_totals.total)
    };
    let taxable = Totals::of_gross(amount - exempt_part);
    let mut items = Vec::new();
    if taxable.net > 0 {
        items.push(Item {
            code: "REEMBOLSO".into(),
            name: "Reembolso parcial".into(),
            quantity: 1,
            unit_price: taxable.net,
            exempt: false,
            amount: taxable.net,
        });
    }
    if exempt_part > 0 {
        items.push(Item {
            code: "REEMBOLSO-EX".into(),
            name: "Reembolso parcial exento".into(),
            quantity: 1,
            unit_price: exempt_part,
            exempt: true,
            amount: exempt_part,
        });
    }
    Content {
        tipo: TipoDte::NotaCredito,
        receptor: original.content.receptor.clone(),
        items,
        totals: Totals {
            net: taxable.net,
            exempt: exempt_part,
            iva: taxable.iva,
            total: amount,
        },
        referencia: Some(referencia(
            CodRef::CorrigeMontos,
            "Corrige montos: reembolso parcial",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(amount: i64, exempt: bool) -> Item {
        Item {
            code: "SKU".into(),
            name: "Producto".into(),
            quantity: 1,
            unit_price: amount,
            exempt,
            amount,
        }
    }

    fn buyer() -> Receptor {
        Receptor {
            rut: "76369187-K".into(),
            razon_social: "Cliente SpA".into(),
            giro: "Comercio".into(),
            address: "Av. Siempre Viva 742".into(),
            comuna: "Providencia".into(),
        }
    }

    #[test]
    fn gross_amounts_split_as_the_sii_says() {
        assert_eq!(
            Totals::of_gross(680),
            Totals {
                net: 571,
                exempt: 0,
                iva: 109,
                total: 680
            }
        );
        // round(119 / 1.19) = 100 exactly; round(1 / 1.19) = round(0.84) = 1.
        assert_eq!(
            (Totals::of_gross(119).net, Totals::of_gross(119).iva),
            (100, 19)
        );
        assert_eq!(Totals::of_gross(1).net, 1);
        // 1.785 → 2 (half away from zero): 2.1241 / 1.19 … and 595 / 1.19 = 500 exactly.
        assert_eq!(Totals::of_gross(595).net, 500);
    }

    #[test]
    fn net_lines_round_iva_once_on_the_taxable_sum() {
        let t = Totals::of_items(&[item(571, false), item(1000, true)]);
        assert_eq!((t.net, t.exempt, t.iva, t.total), (571, 1000, 108, 1679));
    }

    #[test]
    fn the_buyer_and_the_lines_choose_the_document() {
        let sale = |receptor, exempt: &[bool]| Sale {
            receptor,
            items: exempt.iter().map(|e| item(100, *e)).collect(),
        };
        assert_eq!(
            document_for_sale(sale(None, &[false, true])).tipo,
            TipoDte::Boleta
        );
        assert_eq!(
            document_for_sale(sale(None, &[true])).tipo,
            TipoDte::BoletaExenta
        );
        assert_eq!(
            document_for_sale(sale(Some(buyer()), &[false])).tipo,
            TipoDte::Factura
        );
        assert_eq!(
            document_for_sale(sale(Some(buyer()), &[true, true])).tipo,
            TipoDte::FacturaExenta
        );
        assert_eq!(
            document_for_sale(sale(None, &[false])).receptor.rut,
            RUT_SIN_RECEPTOR
        );
    }

    #[test]
    fn a_full_refund_cancels_and_a_partial_one_corrects_amounts() {
        let content = document_for_sale(Sale {
            receptor: None,
            items: vec![item(1000, false), item(500, true)],
        });
        let original = Issued {
            tipo: content.tipo,
            folio: 7,
            fecha: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            content,
        };
        let full = nota_de_credito(&original, original.content.totals.total, true);
        assert_eq!(full.referencia.as_ref().unwrap().cod_ref, CodRef::Anula);
        assert_eq!(full.totals, original.content.totals);
        assert_eq!(full.items, original.content.items);

        let partial = nota_de_credito(&original, 840, false);
        let r = partial.referencia.as_ref().unwrap();
        assert_eq!(
            (r.cod_ref, r.tipo, r.folio),
            (CodRef::CorrigeMontos, TipoDte::Boleta, 7)
        );
        // 840 of 1690: exempt share round(840 × 500 / 1690) = 249; 591 gross → 497 + 94.
        assert_eq!(
            partial.totals,
            Totals {
                net: 497,
                exempt: 249,
                iva: 94,
                total: 840
            }
        );
        assert_eq!(
            partial.totals.net + partial.totals.exempt + partial.totals.iva,
            840
        );
    }
}
