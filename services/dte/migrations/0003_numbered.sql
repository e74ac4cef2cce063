-- Issuing in two steps: a short transaction takes the folio (the per-type lock is held only
-- for that), the document is built and signed outside any lock, then stored. `numbered`
-- is the state in between: the folio is the document's for good, so a crash there is
-- finished by the next issuing round (no gap).
ALTER TABLE documents DROP CONSTRAINT documents_status_check;
ALTER TABLE documents ADD CONSTRAINT documents_status_check
    CHECK (status IN ('pending_folio', 'numbered', 'issued', 'submitted', 'accepted', 'accepted_with_objections', 'rejected'));
-- The event that asked for the document (dte.issued names it as its cause).
ALTER TABLE documents ADD COLUMN causation_id text NOT NULL DEFAULT '';
CREATE INDEX documents_numbered ON documents (updated_at) WHERE status = 'numbered';
