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
    -- The signed RespuestaDTE (RecepcionEnvio) answering it, ISO-8859-1.
    respuesta      bytea,
    -- Where the answer is mailed (the supplier's exchange address: the message's sender,
    -- else the documents' CorreoEmisor; empty: nowhere known), and how that went. The
    -- mailer sends each answer once it is stored; a failure is retried with back-off.
    answer_to      text NOT NULL DEFAULT '',
    answer_sent_at timestamptz,
    answer_attempts integer NOT NULL DEFAULT 0,
    answer_next_at timestamptz NOT NULL DEFAULT now(),
    answer_error   text NOT NULL DEFAULT '',
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
    received_at     timestamptz NOT NULL DEFAULT now()
);
-- A valid document is kept once; invalid copies (a forgery, a broken file) are kept each
-- time, answered as rejected, and never keep the genuine document out.
CREATE UNIQUE INDEX received_documents_once ON received_documents (rut_emisor, tipo_dte, folio) WHERE valid;
CREATE INDEX received_documents_by_time ON received_documents (received_at DESC, id DESC);
CREATE INDEX received_documents_by_envelope ON received_documents (envelope_id);
CREATE INDEX received_envelopes_to_answer ON received_envelopes (answer_next_at)
    WHERE answer_sent_at IS NULL AND answer_to <> '' AND respuesta IS NOT NULL;
