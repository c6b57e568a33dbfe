-- Mail to one address is looked up (the CLI's `outbox --to`, and whether an
-- address was told of a repeated signup lately) without a scan.
CREATE INDEX outbox_recipient ON outbox (recipient, created_at);
