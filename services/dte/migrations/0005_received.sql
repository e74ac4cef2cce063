-- Documents suppliers send to the company (the buying side), as received: each envelope
-- byte for byte, and each of its documents once (a supplier's RUTEmisor, TipoDTE, Folio),
-- with what the checks found and the reception code the answer to the supplier will carry.
CREATE TABLE received_envelopes (
    id             uuid PRIMARY KEY,
    -- The receiver's number for the envelope (CodEnvio and IdRespuesta of the answer).
    cod_envio      bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- `api`, `cli`, or the mailbox message it came in.
    source         text NOT NULL,
    -- The file's name as it came (NmbEnvio of the answer).
    name           text NOT NULL,
    -- EnvioDTE, EnvioBOLETA or DTE (a lone document).
    kind           text NOT NULL,
    -- The Caratula's sender and addressee (empty for a lone DTE).
    rut_emisor     text NOT NULL DEFAULT '',
    rut_receptor   text NOT NULL DEFAULT '',
    -- The SetDTE's ID (EnvioDTEID of the answer).
    set_id         text NOT NULL DEFAULT '',
    bytes          bytea NOT NULL,
    sha256         bytea NOT NULL UNIQUE,
    signature_ok   boolean NOT NULL,
    signature_detail text NOT NULL,
    -- EstadoRecepEnv (RespuestaEnvioDTE_v10.xsd): 0 received, 1 schema error, 2 signature
    -- error, 3 the receptor is not us, 99 other.
    estado_recep_env integer NOT NULL,
    estado_detail  text NOT NULL,
    -- Where the answers are mailed (the supplier's exchange address: the message's sender,
    -- else the documents' CorreoEmisor; empty: nowhere known).
    answer_to      text NOT NULL DEFAULT '',
    received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE received_documents (
    id              uuid PRIMARY KEY,
    envelope_id     uuid NOT NULL REFERENCES received_envelopes (id),
    rut_emisor      text NOT NULL,
    razon_social_emisor text NOT NULL DEFAULT '',
    tipo_dte        integer NOT NULL,
    folio           bigint NOT NULL,
    rut_receptor    text NOT NULL,
    fch_emis        text NOT NULL DEFAULT '',
    mnt_total       bigint NOT NULL DEFAULT 0,
    -- The DTE element as received (decoded from the envelope's declared encoding).
    xml             text NOT NULL,
    -- Every check: schema, signature, ted, ted_consistency, receptor ({passed, detail}).
    checks          jsonb NOT NULL,
    valid           boolean NOT NULL,
    -- EstadoRecepDTE: 0 received, 1 signature error, 2 issuer error, 3 the receptor is not
    -- us, 99 other (a repeated valid document is not stored again: it is answered 4).
    estado_recep_dte integer NOT NULL,
    estado_detail   text NOT NULL,
    -- The buyer's verdict within the law's 8 days (Ley 19.983): accepted,
    -- accepted_with_discrepancies or claimed; empty while none was given.
    decision        text NOT NULL DEFAULT '' CHECK (decision IN ('', 'accepted', 'accepted_with_discrepancies', 'claimed')),
    decision_reason text NOT NULL DEFAULT '',
    decided_at      timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now()
);
-- A valid document is kept once; invalid copies (a forgery, a broken file) are kept each
-- time, answered as rejected, and never keep the genuine document out.
CREATE UNIQUE INDEX received_documents_once ON received_documents (rut_emisor, tipo_dte, folio) WHERE valid;
CREATE INDEX received_documents_by_time ON received_documents (received_at DESC, id DESC);
CREATE INDEX received_documents_by_envelope ON received_documents (envelope_id);

-- Every signed answer to a supplier: the envelope's reception (RespuestaDTE with
-- RecepcionEnvio), a document's commercial verdict (RespuestaDTE with ResultadoDTE), the
-- receipt of its goods or services (EnvioRecibos). Each is stored before it is mailed, so
-- none is lost; the mailer sends it, retrying with back-off, and marks it sent.
-- IdRespuesta: the receiver's number for each answer (taken before the answer is signed).
CREATE SEQUENCE received_answer_numbers;
CREATE TABLE received_answers (
    id           uuid PRIMARY KEY,
    answer_no    bigint NOT NULL UNIQUE,
    envelope_id  uuid NOT NULL REFERENCES received_envelopes (id),
    document_id  uuid REFERENCES received_documents (id),
    kind         text NOT NULL CHECK (kind IN ('recepcion', 'resultado', 'recibos')),
    xml          bytea NOT NULL,
    answer_to    text NOT NULL DEFAULT '',
    sent_at      timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    error        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX received_answers_to_send ON received_answers (next_at)
    WHERE sent_at IS NULL AND answer_to <> '';
CREATE INDEX received_answers_by_envelope ON received_answers (envelope_id);
