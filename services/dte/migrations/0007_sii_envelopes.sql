-- Batched submission: documents are signed one by one (their `DTE`), and the SII receives
-- them in envelopes of many (an EnvioBOLETA of up to 500 boletas; one signature, one upload,
-- one status query for all). An envelope is sent, followed, and settles each of its
-- documents from the SII's per-document answer in one transaction.
CREATE TABLE sii_envelopes (
    id                uuid PRIMARY KEY,
    boleta            boolean NOT NULL,
    status            text NOT NULL CHECK (status IN ('built', 'submitted', 'done')),
    -- Exactly as sent (ISO-8859-1, signed).
    xml               bytea NOT NULL,
    track_id          text NOT NULL DEFAULT '',
    sii_status_detail text NOT NULL DEFAULT '',
    sii_attempts      integer NOT NULL DEFAULT 0,
    sii_next_at       timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sii_envelopes_due ON sii_envelopes (sii_next_at) WHERE status IN ('built', 'submitted');

-- A document's signed `DTE` element (UTF-8, as it goes into an envelope), and the envelope
-- it was sent in (which documents, their types and traces are read from here, not copied
-- onto the envelope). `envelope` keeps the one-document envelopes of documents issued
-- before.
ALTER TABLE documents
    ADD COLUMN signed_dte text,
    ADD COLUMN sii_envelope_id uuid REFERENCES sii_envelopes (id);
CREATE INDEX documents_unpacked ON documents (issued_at) WHERE status = 'issued' AND sii_envelope_id IS NULL;
CREATE INDEX documents_by_envelope ON documents (sii_envelope_id) WHERE sii_envelope_id IS NOT NULL;

-- Documents issued before and still with the SII go on as envelopes of one.
WITH moved AS (
    INSERT INTO sii_envelopes (id, boleta, status, xml, track_id, sii_status_detail,
                               sii_attempts, sii_next_at)
    SELECT id, tipo_dte IN (39, 41), CASE status WHEN 'issued' THEN 'built' ELSE 'submitted' END,
           envelope, track_id, sii_status_detail, sii_attempts, sii_next_at
    FROM documents WHERE status IN ('issued', 'submitted') AND envelope IS NOT NULL
    RETURNING id
)
UPDATE documents d SET sii_envelope_id = moved.id FROM moved WHERE d.id = moved.id;
-- The SII's pacing is the envelope's now.
DROP INDEX documents_sii_due;
ALTER TABLE documents DROP COLUMN sii_attempts, DROP COLUMN sii_next_at;
