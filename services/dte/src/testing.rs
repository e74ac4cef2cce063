//! For tests and tooling: another company selling to ours, issuing facturas signed with a
//! self-signed certificate and stamped from a fake CAF (NOT issued by the SII), so the
//! buying side can be exercised end to end.

use chrono::NaiveDate;
use platform::chile::Rut;

use crate::{
    caf::{self, Caf},
    certificate,
    domain::{self, Issuer, Item, Receptor, Sale, TipoDte},
    xml::{
        document::{self, SignedDte, Stamp},
        signature::SigningIdentity,
    },
};

/// A supplier: its company, a CAF of facturas 1 to 100, and its signing identity.
pub struct Supplier {
    pub issuer: Issuer,
    pub caf: Caf,
    pub identity: SigningIdentity,
}

/// The day the supplier's documents are dated.
pub fn fecha() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date")
}

impl Supplier {
    /// "Proveedora Ñuñoa Ltda." (RUT 76086428-5), otherwise like the development company.
    pub fn new() -> anyhow::Result<Self> {
        let number = 76_086_428;
        let issuer = Issuer {
            rut: Rut::parse(&format!("{number}-{}", Rut::check_digit(number)))
                .map_err(|e| anyhow::anyhow!(e))?,
            razon_social: "Proveedora Ñuñoa Ltda.".into(),
            ..crate::development_issuer()
        };
        let xml = caf::fake(
            TipoDte::Factura,
            1,
            100,
            &issuer.rut,
            &issuer.razon_social,
            fecha(),
        )?;
        let (key, der) = certificate::self_signed(&issuer.rut_envia.to_string())?;
        Ok(Self {
            caf: Caf::parse(xml.as_bytes())?,
            identity: certificate::identity(&key, der)?,
            issuer,
        })
    }

    /// A signed factura of folio `folio` to `buyer`: ten boxes, $ 17.850.
    pub fn factura(&self, folio: i64, buyer: &str) -> anyhow::Result<SignedDte> {
        let content = domain::document_for_sale(Sale {
            receptor: Some(Receptor {
                rut: buyer.into(),
                razon_social: "Orderflow SpA".into(),
                giro: "Comercio electrónico".into(),
                address: "Av. Providencia 1234".into(),
                comuna: "Providencia".into(),
            }),
            items: vec![Item {
                code: "CAJA-1".into(),
                name: "Cajas de cartón".into(),
                quantity: 10,
                unit_price: 1_500,
                exempt: false,
                amount: 15_000,
            }],
        });
        Ok(document::build_dte(
            &self.issuer,
            &content,
            folio,
            fecha(),
            fecha().and_hms_opt(9, 0, 0).expect("a time"),
            &Stamp {
                caf_element: &self.caf.caf_element,
                caf_key: &self.caf.private_key,
            },
            &self.identity,
        )?)
    }

    /// Sends `dtes` (addressed to `receptor`) to the SII at `endpoints`, as a supplier does
    /// before mailing them, and waits until the SII has processed them (the SII then has
    /// them on its registry of acceptance and claims).
    pub async fn send_to_sii(
        &self,
        endpoints: crate::sii::client::SiiEndpoints,
        dtes: &[SignedDte],
        receptor: &str,
    ) -> anyhow::Result<()> {
        use crate::sii::{SiiClient as _, SiiStatus};
        let sii = crate::sii::client::HttpSiiClient::new(
            endpoints,
            self.identity.clone(),
            self.issuer.rut,
            self.issuer.rut_envia,
            std::time::Duration::from_secs(10),
        )?;
        let track = sii
            .submit(&self.envelope(dtes, receptor, 1)?, false)
            .await?;
        for _ in 0..10 {
            match sii.status(&track, false).await? {
                SiiStatus::Pending { .. } => {}
                SiiStatus::Processed(p) if p.rejected == 0 && p.objections == 0 => return Ok(()),
                other => anyhow::bail!("the SII did not accept the supplier's upload: {other:?}"),
            }
        }
        anyhow::bail!("the SII never processed the supplier's upload {track}")
    }

    /// The envelope of `dtes` to `receptor`, signed at `second` past nine.
    pub fn envelope(
        &self,
        dtes: &[SignedDte],
        receptor: &str,
        second: u32,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(document::build_envelope_to(
            &self.issuer,
            receptor,
            dtes,
            fecha().and_hms_opt(9, 0, second).expect("a time"),
            &self.identity,
        )?)
    }
}
