-- Submission to the SII: when a document is next tried (sent, or its status asked), and how
-- many transport failures in a row it has met (the back-off grows with them).
ALTER TABLE documents
    ADD COLUMN sii_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN sii_next_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX documents_sii_due ON documents (sii_next_at) WHERE status IN ('issued', 'submitted');
