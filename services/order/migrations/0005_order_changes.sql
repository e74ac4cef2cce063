-- Who follows an order (a long-polling GetOrder) is woken when one of its events commits:
-- each appended event notifies its order id on 'orderflow_order_changes_<schema>'.
CREATE FUNCTION order_changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderflow_order_changes_' || TG_TABLE_SCHEMA, NEW.stream_id);
    RETURN NULL;
END $$;
CREATE TRIGGER order_changes_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION order_changes_notify();
