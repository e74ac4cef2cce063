-- The order service's sweeper looks for old reservations still held (whose order may
-- never have been recorded): only those rows, by age.
CREATE INDEX reservations_held_by_age ON reservations (created_at) WHERE status = 'reserved';
