//! Submission to the SII, through [`SiiClient`], with the SII's real protocols ([`client`]):
//! seed → signed token → upload (`DTEUpload` multipart for `EnvioDTE`, the boleta REST API
//! for `EnvioBOLETA`) → track id → status. [`sim`] is a local SII speaking the same wire
//! formats; [`worker`] sends issued documents and follows their status. [`registry`] is the
//! SII's registry of a buyer's acceptance and claims ([`SiiRegistry`]).

pub mod client;
pub mod protocol;
pub mod registry;
pub mod sim;
pub mod worker;

/// Where the SII stands on an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiiStatus {
    /// Still being processed (`REC`, `SOK`, `CRT`, `FOK`, `PDR`, …).
    Pending { estado: String },
    /// Processed (`EPR`): each document judged on its own.
    Processed(Processed),
    /// The whole upload was rejected (schema, signature, carátula): every document in it.
    Rejected { detail: String },
}

/// The SII's verdict on a processed upload: its counts, and the documents it named as
/// rejected or accepted with objections (the rest of the upload was accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    pub accepted: u64,
    pub rejected: u64,
    pub objections: u64,
    /// "Envío procesado: 3 aceptados, 0 rechazados, 0 reparos".
    pub summary: String,
    /// Per named document; empty when the SII answered with counts only (`QueryEstUp`).
    pub named: Vec<DocumentVerdict>,
}

/// One document the SII named in its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentVerdict {
    pub tipo: i32,
    pub folio: i64,
    pub verdict: Verdict,
    /// The SII's reasons.
    pub detail: String,
}

/// A document's final status with the SII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    AcceptedWithObjections,
    Rejected,
}

impl Verdict {
    /// The document status it stores.
    pub fn status(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AcceptedWithObjections => "accepted_with_objections",
            Self::Rejected => "rejected",
        }
    }
}

impl Processed {
    /// The verdict on one of the upload's documents (`tipo`, `folio`): as the SII named it;
    /// else accepted when the SII names documents (it names every one it did not accept);
    /// else, from counts alone, the upload's worst. Counts tell one document's verdict
    /// exactly only in an upload of one, so envelopes whose status comes as counts
    /// (`EnvioDTE`, by `QueryEstUp`) hold one document.
    pub fn verdict_of(&self, tipo: i32, folio: i64) -> (Verdict, String) {
        if let Some(named) = self
            .named
            .iter()
            .find(|d| d.tipo == tipo && d.folio == folio)
        {
            return (named.verdict, named.detail.clone());
        }
        let verdict = if !self.named.is_empty() {
            Verdict::Accepted
        } else if self.rejected > 0 {
            Verdict::Rejected
        } else if self.objections > 0 {
            Verdict::AcceptedWithObjections
        } else {
            Verdict::Accepted
        };
        (verdict, self.summary.clone())
    }
}

/// Why a call to the SII failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiiError {
    /// The SII could not be reached or answered garbage: retried with back-off.
    #[error("the SII is unreachable or answered unexpectedly: {0}")]
    Transport(String),
    /// The SII refused the request itself (a bad upload): not retried.
    #[error("the SII refused: {0}")]
    Refused(String),
}

/// The SII as the submission worker sees it.
#[async_trait::async_trait]
pub trait SiiClient: Send + Sync {
    /// Uploads a signed envelope (ISO-8859-1 bytes); the track id.
    async fn submit(&self, envelope: &[u8], boleta: bool) -> Result<String, SiiError>;

    /// The status of an upload.
    async fn status(&self, track_id: &str, boleta: bool) -> Result<SiiStatus, SiiError>;
}

/// The SII's registry of acceptance and claims, as the buyer of a received document sees
/// it (Ley 20.956).
#[async_trait::async_trait]
pub trait SiiRegistry: Send + Sync {
    /// Registers `action` on the document (RUTEmisor, TipoDTE, Folio): the SII's answer,
    /// whether it took the action or refused it (too late, contradicting an earlier event…).
    async fn register(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
        action: registry::Action,
    ) -> Result<registry::Answer, SiiError>;

    /// The document's events in the registry.
    async fn events(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
    ) -> Result<(registry::Answer, Vec<registry::Event>), SiiError>;

    /// When the SII received the document (the 8 days count from it); `None` when it has
    /// not.
    async fn reception_date(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, SiiError>;
}
