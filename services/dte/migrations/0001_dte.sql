-- CAFs as uploaded (the XML is kept byte for byte: it holds the TED key).
CREATE TABLE cafs (
    id                 uuid PRIMARY KEY,
    tipo_dte           integer NOT NULL,
    folio_from         bigint NOT NULL CHECK (folio_from >= 1),
    folio_to           bigint NOT NULL CHECK (folio_to >= folio_from),
    fecha_autorizacion date NOT NULL,
    xml                bytea NOT NULL,
    uploaded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cafs_by_type ON cafs (tipo_dte, folio_from);

-- The next folio per TipoDTE. Its row lock serialises allocation (across replicas too), and
-- it is advanced in the issuing transaction, so a folio is used once, in order, with no gap.
CREATE TABLE folio_counters (
    tipo_dte   integer PRIMARY KEY,
    next_folio bigint NOT NULL DEFAULT 1
);

-- Every document: waiting for a folio, issued (signed envelope kept exactly as sent), and
-- later its SII status.
CREATE TABLE documents (
    id                     uuid PRIMARY KEY,
    order_id               text NOT NULL,
    customer_id            text NOT NULL,
    -- Set for a nota de crédito issued for a refund.
    refund_id              text,
    refund_amount          bigint,
    refund_full            boolean,
    tipo_dte               integer NOT NULL,
    folio                  bigint,
    status                 text NOT NULL CHECK (status IN ('pending_folio', 'issued', 'submitted', 'accepted', 'accepted_with_objections', 'rejected')),
    -- What the document says (receptor, lines, totals, reference), as JSON.
    content                jsonb,
    receptor_rut           text NOT NULL DEFAULT '',
    mnt_neto               bigint NOT NULL DEFAULT 0,
    mnt_exe                bigint NOT NULL DEFAULT 0,
    iva                    bigint NOT NULL DEFAULT 0,
    mnt_total              bigint NOT NULL DEFAULT 0,
    fch_emis               date,
    caf_id                 uuid REFERENCES cafs (id),
    envelope               bytea,
    track_id               text NOT NULL DEFAULT '',
    sii_status_detail      text NOT NULL DEFAULT '',
    references_document_id uuid REFERENCES documents (id),
    issued_at              timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'pending_folio') = (folio IS NULL))
);
CREATE UNIQUE INDEX documents_folio ON documents (tipo_dte, folio) WHERE folio IS NOT NULL;
-- One sale document per order, one nota de crédito per refund: redelivered events are no-ops.
CREATE UNIQUE INDEX documents_one_per_order ON documents (order_id) WHERE refund_id IS NULL;
CREATE UNIQUE INDEX documents_one_per_refund ON documents (refund_id) WHERE refund_id IS NOT NULL;
CREATE INDEX documents_pending ON documents (tipo_dte, created_at) WHERE status = 'pending_folio';
CREATE INDEX documents_by_issue ON documents (issued_at DESC, id DESC);

-- The development signing certificate, generated once when none is configured.
CREATE TABLE dev_certificate (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key_pem     text NOT NULL,
    certificate bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
