-- Webpay Plus (redirect flow): the shopper types the card on Webpay's page, so a Webpay
-- payment has no card until Webpay's commit names its last four digits. A pending Webpay
-- payment keeps the transaction's token (its return and reconciliation find it by it),
-- the buy order Webpay was given (a timed-out form returns only that) and the page the
-- browser is sent to.
ALTER TABLE payments ADD COLUMN provider text NOT NULL DEFAULT 'sandbox';
ALTER TABLE payments ADD COLUMN webpay_token text;
ALTER TABLE payments ADD COLUMN webpay_buy_order text;
ALTER TABLE payments ADD COLUMN redirect_url text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX payments_by_webpay_token ON payments (webpay_token) WHERE webpay_token IS NOT NULL;
CREATE UNIQUE INDEX payments_by_webpay_buy_order ON payments (webpay_buy_order) WHERE webpay_buy_order IS NOT NULL;
