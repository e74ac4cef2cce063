-- The SII's registry of acceptance and claims (Ley 20.956): when the SII received each
-- supplier's factura (the law's 8 days count from it; our own reception until it is known)
-- and the events the registry holds for it (ACD, ERM, RCD, RFP, RFT: code, description,
-- responsible, at), as the SII last listed them.
ALTER TABLE received_documents
    ADD COLUMN sii_received_at timestamptz,
    ADD COLUMN sii_events jsonb NOT NULL DEFAULT '[]';
