//! The gRPC adapter: CAF upload, document reads (list, one, XML, PDF), verification, and
//! the documents received from suppliers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::grpc::{Caller, failed_precondition, internal, invalid_argument, time_field};
use proto::{
    dte::v1::{
        self as pb, AcceptReceivedDocumentRequest, ClaimReceivedDocumentRequest,
        GetDocumentRequest, GetReceivedAnswerRequest, GetReceivedDocumentRequest,
        ListDocumentsRequest, ListDocumentsResponse, ListOrderDocumentsRequest,
        ListReceivedDocumentsRequest, ListReceivedDocumentsResponse, ReceiveEnvelopeRequest,
        UploadCafRequest, VerifyRequest, VerifyResponse, dte_service_server::DteService,
    },
    google::api::HttpBody,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    caf::Caf,
    domain::TipoDte,
    issuing::Issuing,
    pdf, received,
    sii::{SiiRegistry, registry::Action},
    store::{self, DocumentFilter, DocumentRow},
    verify,
};

/// The `DteService` implementation.
#[derive(Clone)]
pub struct DteGrpc {
    issuing: Arc<Issuing>,
    /// `DTE_FOLIOS_LOW`.
    folios_low: i64,
    /// The SII's registry of acceptance and claims, where verdicts on facturas go.
    registry: Arc<dyn SiiRegistry>,
}

impl DteGrpc {
    /// Serves through `issuing`; a type with fewer than `folios_low` folios left is low.
    pub fn new(issuing: Arc<Issuing>, folios_low: i64, registry: Arc<dyn SiiRegistry>) -> Self {
        Self {
            issuing,
            folios_low,
            registry,
        }
    }
}

fn caf_proto(row: &store::CafRow) -> pb::Caf {
    // The type's counter runs across its CAFs in order: this range's used part is what
    // lies before the counter.
    let next = row.next_folio.clamp(row.folio_from, row.folio_to + 1);
    pb::Caf {
        id: row.id.to_string(),
        tipo_dte: row.tipo_dte,
        folio_from: row.folio_from,
        folio_to: row.folio_to,
        next_folio: row.next_folio.max(row.folio_from),
        fecha_autorizacion: row.fecha_autorizacion.format("%Y-%m-%d").to_string(),
        uploaded_at: timestamp(row.uploaded_at),
        used: next - row.folio_from,
        remaining: row.folio_to + 1 - next,
    }
}

fn timestamp(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn document_proto(d: &DocumentRow) -> pb::Document {
    pb::Document {
        id: d.id.to_string(),
        order_id: d.order_id.clone(),
        tipo_dte: d.tipo_dte,
        folio: d.folio.unwrap_or_default(),
        status: d.status.clone(),
        receptor_rut: d.receptor_rut.clone(),
        mnt_neto: d.mnt_neto,
        mnt_exe: d.mnt_exe,
        iva: d.iva,
        mnt_total: d.mnt_total,
        track_id: d.track_id.clone(),
        sii_status_detail: d.sii_status_detail.clone(),
        references_document_id: d
            .references_document_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        issued_at: d.issued_at.and_then(timestamp),
    }
}

fn check_proto(c: &verify::Check) -> Option<pb::Check> {
    Some(pb::Check {
        passed: c.passed,
        applicable: c.applicable,
        detail: c.detail.clone(),
    })
}

fn stored_check_proto(c: &received::StoredCheck) -> Option<pb::Check> {
    Some(pb::Check {
        passed: c.passed,
        applicable: c.applicable,
        detail: c.detail.clone(),
    })
}

fn received_proto(d: &received::DocumentRow, duplicate: bool) -> pb::ReceivedDocument {
    let checks = &d.checks.0;
    pb::ReceivedDocument {
        id: d.id.to_string(),
        envelope_id: d.envelope_id.to_string(),
        rut_emisor: d.rut_emisor.clone(),
        razon_social_emisor: d.razon_social_emisor.clone(),
        tipo_dte: d.tipo_dte,
        folio: d.folio,
        rut_receptor: d.rut_receptor.clone(),
        fch_emis: d.fch_emis.clone(),
        mnt_total: d.mnt_total,
        valid: d.valid,
        // A repeated copy is answered as such, whatever the first one's verdict.
        estado_recep_dte: if duplicate {
            received::DTE_REPEATED
        } else {
            d.estado_recep_dte
        },
        estado_detail: if duplicate {
            format!("DTE repetido: received before as {}", d.id)
        } else {
            d.estado_detail.clone()
        },
        schema: stored_check_proto(&checks.schema),
        signature: stored_check_proto(&checks.signature),
        ted: stored_check_proto(&checks.ted),
        ted_consistency: stored_check_proto(&checks.ted_consistency),
        receptor: stored_check_proto(&checks.receptor),
        received_at: timestamp(d.received_at),
        duplicate,
        decision: d.decision.clone(),
        decision_reason: d.decision_reason.clone(),
        decided_at: d.decided_at.and_then(timestamp),
        deadline: timestamp(d.deadline()),
        answers: Vec::new(),
        sii_received_at: d.sii_received_at.and_then(timestamp),
        sii_events: d
            .sii_events
            .iter()
            .map(|e| pb::RegistryEvent {
                code: e.code.clone(),
                description: e.description.clone(),
                responsible: e.responsible.clone(),
                at: e.at.clone(),
            })
            .collect(),
    }
}

fn answer_proto(a: &received::AnswerRow) -> pb::ReceivedAnswer {
    pb::ReceivedAnswer {
        id: a.id.to_string(),
        kind: a.kind.clone(),
        answer_to: a.answer_to.clone(),
        sent_at: a.sent_at.and_then(timestamp),
        error: a.error.clone(),
        created_at: timestamp(a.created_at),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| invalid_argument("id", "must be a document id (UUID)"))
}

fn body_of(body: Option<HttpBody>) -> Result<Vec<u8>, Status> {
    let data = body.map(|b| b.data).unwrap_or_default();
    if data.is_empty() {
        return Err(invalid_argument("body", "must hold the XML file"));
    }
    Ok(data)
}

impl DteGrpc {
    /// The document, if `caller` may read it (the order's customer, or an admin).
    async fn visible_document(&self, caller: &Caller, id: &str) -> Result<DocumentRow, Status> {
        let user = caller.require_user()?;
        let id = parse_id(id)?;
        let document = store::document(&self.issuing.pool, id)
            .await
            .map_err(internal)?
            .filter(|d| d.customer_id == user.to_string() || caller.has_role("admin"))
            .ok_or_else(|| Status::not_found("no such document"))?;
        Ok(document)
    }
}

#[tonic::async_trait]
impl DteService for DteGrpc {
    async fn upload_caf(
        &self,
        request: Request<UploadCafRequest>,
    ) -> Result<Response<pb::Caf>, Status> {
        Caller::of(&request).require_admin()?;
        let xml = body_of(request.into_inner().body)?;
        let caf = Caf::parse(&xml).map_err(|e| invalid_argument(e.field, e.problem))?;
        caf.check_issuer(&self.issuing.issuer.rut)
            .map_err(|e| invalid_argument(e.field, e.problem))?;
        let mut tx = self.issuing.pool.begin().await.map_err(internal)?;
        let row = store::insert_caf(
            &mut tx,
            Uuid::now_v7(),
            caf.tipo,
            caf.folio_from,
            caf.folio_to,
            caf.fecha_autorizacion,
            &xml,
        )
        .await
        .map_err(internal)?
        .map_err(|o| {
            failed_precondition(
                "DA/RNG",
                format!(
                    "folios {}..{} of type {} overlap the stored range {}..{}",
                    caf.folio_from, caf.folio_to, caf.tipo, o.folio_from, o.folio_to
                ),
            )
        })?;
        tx.commit().await.map_err(internal)?;
        tracing::info!(
            tipo = caf.tipo.code(),
            from = caf.folio_from,
            to = caf.folio_to,
            "CAF stored"
        );
        // Documents that waited for folios of this type are issued now.
        self.issuing.wake();
        Ok(Response::new(caf_proto(&row)))
    }

    async fn list_cafs(
        &self,
        request: Request<pb::ListCafsRequest>,
    ) -> Result<Response<pb::ListCafsResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let rows = store::list_cafs(&self.issuing.pool)
            .await
            .map_err(internal)?;
        let cafs: Vec<pb::Caf> = rows.iter().map(caf_proto).collect();
        // Per type, the sum of its ranges' remaining folios: one reading, so the two agree.
        let mut remaining = std::collections::BTreeMap::<i32, i64>::new();
        for caf in &cafs {
            *remaining.entry(caf.tipo_dte).or_default() += caf.remaining;
        }
        Ok(Response::new(pb::ListCafsResponse {
            cafs,
            folios: remaining
                .into_iter()
                .map(|(tipo_dte, remaining)| pb::FolioStock {
                    tipo_dte,
                    remaining,
                    low: remaining < self.folios_low,
                })
                .collect(),
        }))
    }

    async fn summarize_documents(
        &self,
        request: Request<pb::SummarizeDocumentsRequest>,
    ) -> Result<Response<pb::SummarizeDocumentsResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let counts = store::status_counts(
            &self.issuing.pool,
            time_field("issued_from", &req.issued_from)?,
            time_field("issued_to", &req.issued_to)?,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::SummarizeDocumentsResponse {
            statuses: counts
                .into_iter()
                .map(|(status, documents)| pb::StatusCount { status, documents })
                .collect(),
        }))
    }

    async fn list_documents(
        &self,
        request: Request<ListDocumentsRequest>,
    ) -> Result<Response<ListDocumentsResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        if req.tipo_dte != 0 && TipoDte::from_code(req.tipo_dte).is_none() {
            return Err(invalid_argument(
                "tipo_dte",
                "must be one of 33, 34, 39, 41, 56, 61",
            ));
        }
        const STATUSES: [&str; 7] = [
            "pending_folio",
            "numbered",
            "issued",
            "submitted",
            "accepted",
            "accepted_with_objections",
            "rejected",
        ];
        if !req.status.is_empty() && !STATUSES.contains(&req.status.as_str()) {
            return Err(invalid_argument(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
        let (limit, after) = page_request(req.page_size, &req.page_token)?;
        let rows = store::list_documents(
            &self.issuing.pool,
            &DocumentFilter {
                tipo: (req.tipo_dte != 0).then_some(req.tipo_dte),
                status: (!req.status.is_empty()).then_some(req.status),
                issued_from: time_field("issued_from", &req.issued_from)?,
                issued_to: time_field("issued_to", &req.issued_to)?,
                after,
                limit: limit + 1,
            },
        )
        .await
        .map_err(internal)?;
        let (page, next_page_token) = page_of(rows, limit, |d| (d.created_at, d.id));
        Ok(Response::new(ListDocumentsResponse {
            documents: page.iter().map(document_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_order_documents(
        &self,
        request: Request<ListOrderDocumentsRequest>,
    ) -> Result<Response<ListDocumentsResponse>, Status> {
        let caller = Caller::of(&request);
        let user = caller.require_user()?;
        let order_id = request.into_inner().order_id;
        if order_id.is_empty() {
            return Err(invalid_argument("order_id", "is required"));
        }
        let rows = store::order_documents(&self.issuing.pool, &order_id)
            .await
            .map_err(internal)?;
        // Another customer's order reads as one with no documents yet: nothing leaks.
        let visible: Vec<_> = rows
            .iter()
            .filter(|d| d.customer_id == user.to_string() || caller.has_role("admin"))
            .map(document_proto)
            .collect();
        Ok(Response::new(ListDocumentsResponse {
            documents: visible,
            next_page_token: String::new(),
        }))
    }

    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let caller = Caller::of(&request);
        let document = self
            .visible_document(&caller, &request.into_inner().id)
            .await?;
        Ok(Response::new(document_proto(&document)))
    }

    async fn get_document_xml(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let caller = Caller::of(&request);
        let document = self
            .visible_document(&caller, &request.into_inner().id)
            .await?;
        let signed = store::signed_xml(&self.issuing.pool, document.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                failed_precondition(
                    "id",
                    "the document is not issued yet (no XML until it is signed)",
                )
            })?;
        let envelope = match signed {
            store::SignedXml::Envelope(envelope) => envelope,
            // The SII got it in an envelope with others: the download is an envelope of
            // its own, signed now.
            store::SignedXml::Dte(xml) => {
                let dte = crate::xml::document::SignedDte {
                    tipo: TipoDte::try_from(document.tipo_dte)
                        .map_err(|e| internal(anyhow::anyhow!(e)))?,
                    folio: document.folio.unwrap_or_default(),
                    xml,
                };
                let issuer = self.issuing.issuer.clone();
                let identity = self.issuing.identity.clone();
                let now = self.issuing.now_in_chile();
                tokio::task::spawn_blocking(move || {
                    crate::xml::document::build_envelope(&issuer, &[dte], now, &identity)
                })
                .await
                .map_err(internal)?
                .map_err(internal)?
            }
        };
        Ok(Response::new(HttpBody {
            content_type: "application/xml; charset=ISO-8859-1".into(),
            data: envelope,
            extensions: Vec::new(),
        }))
    }

    async fn get_document_pdf(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let caller = Caller::of(&request);
        let document = self
            .visible_document(&caller, &request.into_inner().id)
            .await?;
        let waiting = || {
            failed_precondition(
                "id",
                "the document is not issued yet (no PDF until it is signed)",
            )
        };
        let (Some(folio), Some(fecha), Some(content)) =
            (document.folio, document.fch_emis, document.content.as_ref())
        else {
            return Err(waiting());
        };
        let signed = match store::signed_xml(&self.issuing.pool, document.id)
            .await
            .map_err(internal)?
            .ok_or_else(waiting)?
        {
            store::SignedXml::Envelope(envelope) => crate::xml::latin1::decode(&envelope),
            store::SignedXml::Dte(xml) => xml,
        };
        let ted = pdf::ted_of(&signed)
            .ok_or_else(|| internal(anyhow::anyhow!("document {} has no TED", document.id)))?;
        let tipo =
            TipoDte::try_from(document.tipo_dte).map_err(|e| internal(anyhow::anyhow!(e)))?;
        let issuer = self.issuing.issuer.clone();
        let content = content.0.clone();
        pdf_response(move || {
            Ok(pdf::Sheet::issued(
                &issuer,
                &pdf::Printable {
                    tipo,
                    folio,
                    fecha,
                    content: &content,
                    ted: &ted,
                },
            ))
        })
        .await
    }

    async fn receive_envelope(
        &self,
        request: Request<ReceiveEnvelopeRequest>,
    ) -> Result<Response<pb::ReceivedEnvelope>, Status> {
        Caller::of(&request).require_admin()?;
        let request = request.into_inner();
        let reply_to = request.reply_to.trim().to_string();
        if !reply_to.is_empty() && reply_to.parse::<lettre::Address>().is_err() {
            return Err(invalid_argument("reply_to", "must be an email address"));
        }
        let xml = body_of(request.body)?;
        let receiver = self.receiver();
        let receipt = received::receive(&self.issuing.pool, receiver, "api", "", &reply_to, xml)
            .await
            .map_err(|e| match e {
                received::ReceiveError::Invalid(problem) => invalid_argument("body", problem),
                received::ReceiveError::Store(e) => internal(e),
            })?;
        let envelope = &receipt.envelope;
        Ok(Response::new(pb::ReceivedEnvelope {
            id: envelope.id.to_string(),
            kind: envelope.kind.clone(),
            rut_emisor: envelope.rut_emisor.clone(),
            rut_receptor: envelope.rut_receptor.clone(),
            estado_recep_env: envelope.estado_recep_env,
            estado_detail: envelope.estado_detail.clone(),
            signature: Some(pb::Check {
                passed: envelope.signature_ok,
                applicable: envelope.kind != "DTE",
                detail: envelope.signature_detail.clone(),
            }),
            received_at: timestamp(envelope.received_at),
            repeated: receipt.repeated,
            cod_envio: envelope.cod_envio,
            name: envelope.name.clone(),
            answer_to: envelope.answer_to.clone(),
            answers: received::envelope_answers(&self.issuing.pool, envelope.id)
                .await
                .map_err(internal)?
                .iter()
                .map(answer_proto)
                .collect(),
            documents: receipt
                .documents
                .iter()
                .map(|d| received_proto(&d.row, d.duplicate))
                .collect(),
        }))
    }

    async fn list_received_documents(
        &self,
        request: Request<ListReceivedDocumentsRequest>,
    ) -> Result<Response<ListReceivedDocumentsResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let rut_emisor = if req.rut_emisor.is_empty() {
            None
        } else {
            Some(
                platform::chile::Rut::parse(&req.rut_emisor)
                    .map_err(|e| invalid_argument("rut_emisor", e))?
                    .to_string(),
            )
        };
        let (limit, after) = page_request(req.page_size, &req.page_token)?;
        const STATUSES: [&str; 6] = [
            "pending",
            "accepted_by_law",
            "accepted",
            "accepted_with_discrepancies",
            "claimed",
            "not_received",
        ];
        let status = match req.status.as_str() {
            "" => None,
            s if STATUSES.contains(&s) => Some(s.to_string()),
            _ => {
                return Err(invalid_argument(
                    "status",
                    format!("must be one of {}", STATUSES.join(", ")),
                ));
            }
        };
        let rows = received::list(
            &self.issuing.pool,
            &received::Filter {
                rut_emisor,
                tipo: (req.tipo_dte != 0).then_some(req.tipo_dte),
                status,
                deadline_before: time_field("deadline_before", &req.deadline_before)?,
                after,
                limit: limit + 1,
            },
        )
        .await
        .map_err(internal)?;
        let (page, next_page_token) = page_of(rows, limit, |d| (d.received_at, d.id));
        Ok(Response::new(ListReceivedDocumentsResponse {
            documents: page.iter().map(|d| received_proto(d, false)).collect(),
            next_page_token,
        }))
    }

    async fn get_received_document(
        &self,
        request: Request<GetReceivedDocumentRequest>,
    ) -> Result<Response<pb::ReceivedDocument>, Status> {
        let document = self.received_document(request).await?;
        Ok(Response::new(self.received_with_answers(&document).await?))
    }

    async fn get_received_document_xml(
        &self,
        request: Request<GetReceivedDocumentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let document = self.received_document(request).await?;
        let xml = received::document_xml(&self.issuing.pool, document.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no such received document"))?;
        Ok(Response::new(HttpBody {
            content_type: "application/xml; charset=utf-8".into(),
            data: xml.into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn get_received_document_pdf(
        &self,
        request: Request<GetReceivedDocumentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let document = self.received_document(request).await?;
        if !document.valid {
            return Err(failed_precondition(
                "id",
                format!(
                    "the document was not received as valid ({}): a copy that failed its checks is not printed",
                    document.estado_detail
                ),
            ));
        }
        let xml = received::document_xml(&self.issuing.pool, document.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no such received document"))?;
        pdf_response(move || pdf::Sheet::of_dte(&xml)).await
    }

    async fn get_received_answer(
        &self,
        request: Request<GetReceivedAnswerRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        Caller::of(&request).require_admin()?;
        let id = Uuid::parse_str(&request.into_inner().id)
            .map_err(|_| invalid_argument("id", "must be an answer id (UUID)"))?;
        let (_, xml) = received::answer_xml(&self.issuing.pool, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no such answer"))?;
        Ok(Response::new(HttpBody {
            content_type: "application/xml; charset=ISO-8859-1".into(),
            data: xml,
            extensions: Vec::new(),
        }))
    }

    async fn accept_received_document(
        &self,
        request: Request<AcceptReceivedDocumentRequest>,
    ) -> Result<Response<pb::ReceivedDocument>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let id = parse_id(&req.id)?;
        let recinto = req.recinto.trim().to_string();
        if req.goods_received && recinto.is_empty() {
            return Err(invalid_argument(
                "recinto",
                "is required when the goods were received: where they arrived",
            ));
        }
        let decision = received::Decision::Accept {
            discrepancies: req.discrepancies,
            goods_received_at: req.goods_received.then_some(recinto),
        };
        self.decide(id, decision).await
    }

    async fn claim_received_document(
        &self,
        request: Request<ClaimReceivedDocumentRequest>,
    ) -> Result<Response<pb::ReceivedDocument>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let id = parse_id(&req.id)?;
        if req.reason.trim().is_empty() {
            return Err(invalid_argument(
                "reason",
                "must say why the document is claimed",
            ));
        }
        let action = match req.action.as_str() {
            "" => Action::ClaimContent,
            code => Action::from_code(code)
                .filter(|a| a.is_claim())
                .ok_or_else(|| invalid_argument("action", "must be RCD, RFP or RFT"))?,
        };
        self.decide(
            id,
            received::Decision::Claim {
                reason: req.reason,
                action,
            },
        )
        .await
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let xml = body_of(request.into_inner().body)?;
        let report = tokio::task::spawn_blocking(move || verify::verify(&xml))
            .await
            .map_err(internal)?
            .map_err(|e| invalid_argument("body", e.to_string()))?;
        Ok(Response::new(VerifyResponse {
            valid: report.valid(),
            envelope_signature: check_proto(&report.envelope_signature),
            documents: report
                .documents
                .iter()
                .map(|d| pb::DocumentCheck {
                    tipo_dte: d.tipo_dte,
                    folio: d.folio,
                    rut_emisor: d.rut_emisor.clone(),
                    schema: check_proto(&d.schema),
                    signature: check_proto(&d.signature),
                    ted: check_proto(&d.ted),
                    ted_consistency: check_proto(&d.ted_consistency),
                })
                .collect(),
        }))
    }
}

impl DteGrpc {
    /// The company as the receiver of suppliers' documents.
    fn receiver(&self) -> received::Receiver<'_> {
        received::Receiver {
            rut: &self.issuing.issuer.rut,
            identity: &self.issuing.identity,
            signer: &self.issuing.issuer.rut_envia,
        }
    }

    /// A received document with its answers, as the API shows it.
    async fn received_with_answers(
        &self,
        document: &received::DocumentRow,
    ) -> Result<pb::ReceivedDocument, Status> {
        let answers = received::document_answers(&self.issuing.pool, document)
            .await
            .map_err(internal)?;
        Ok(pb::ReceivedDocument {
            answers: answers.iter().map(answer_proto).collect(),
            ..received_proto(document, false)
        })
    }

    /// A received document by id, for an admin.
    async fn received_document(
        &self,
        request: Request<GetReceivedDocumentRequest>,
    ) -> Result<received::DocumentRow, Status> {
        Caller::of(&request).require_admin()?;
        let id = parse_id(&request.into_inner().id)?;
        received::document(&self.issuing.pool, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no such received document"))
    }
}

impl DteGrpc {
    /// Gives a verdict on a received document, now.
    async fn decide(
        &self,
        id: Uuid,
        decision: received::Decision,
    ) -> Result<Response<pb::ReceivedDocument>, Status> {
        let document = received::decide(
            &self.issuing.pool,
            self.receiver(),
            Some(self.registry.as_ref()),
            id,
            &decision,
            Utc::now(),
        )
        .await
        .map_err(|e| match e {
            received::DecideError::NotFound => Status::not_found("no such received document"),
            received::DecideError::Refused(problem) => failed_precondition("id", problem),
            received::DecideError::Unavailable(problem) => Status::unavailable(problem),
            received::DecideError::Store(e) => internal(e),
        })?;
        Ok(Response::new(self.received_with_answers(&document).await?))
    }
}

/// A sheet made and printed off the async threads (the barcode and the PDF are CPU work),
/// as the API's PDF body.
async fn pdf_response(
    sheet: impl FnOnce() -> Result<pdf::Sheet, pdf::PdfError> + Send + 'static,
) -> Result<Response<HttpBody>, Status> {
    let bytes = tokio::task::spawn_blocking(move || pdf::render(&sheet()?))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Response::new(HttpBody {
        content_type: "application/pdf".into(),
        data: bytes,
        extensions: Vec::new(),
    }))
}

/// Where a page starts: after this (time, id).
type Cursor = (DateTime<Utc>, Uuid);

/// A list request's page: how many rows (50 unless asked, at most 500) and after which
/// (time, id) the page starts.
fn page_request(page_size: i32, page_token: &str) -> Result<(i64, Option<Cursor>), Status> {
    if !(0..=500).contains(&page_size) {
        return Err(invalid_argument("page_size", "must be between 1 and 500"));
    }
    let after = if page_token.is_empty() {
        None
    } else {
        Some(decode_token(page_token)?)
    };
    Ok((
        if page_size == 0 {
            50
        } else {
            i64::from(page_size)
        },
        after,
    ))
}

/// The page out of `rows` (fetched `limit + 1`, newest first) and the token of the next
/// page (empty on the last), made of the last row's `key`.
fn page_of<T>(rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
    let more = rows.len() as i64 > limit;
    let page: Vec<T> = rows.into_iter().take(limit as usize).collect();
    let token = match page.last() {
        Some(last) if more => {
            let (at, id) = key(last);
            format!("{}_{id}", at.timestamp_micros())
        }
        _ => String::new(),
    };
    (page, token)
}

fn decode_token(token: &str) -> Result<Cursor, Status> {
    let bad = || invalid_argument("page_token", "is not a token this API returned");
    let (micros, id) = token.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    Ok((
        DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}
