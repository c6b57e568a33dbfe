-- An email address belongs to an account only once verified: the account's
-- owner proves the mailbox with a mailed token while signed in (or by
-- accepting an invitation mailed there). Until then the account cannot
-- accept invitations, join tenants or be found by its address.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

CREATE TABLE email_verifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_verifications_user ON email_verifications (user_id);
