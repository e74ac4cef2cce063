-- The trace context of the event that asked for the document (traceparent, tracestate),
-- so issuing it later, in another task, continues that trace.
ALTER TABLE documents ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}';
