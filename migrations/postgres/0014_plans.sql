-- The plan catalog, seeded from the configuration of the process that runs
-- the backend, so that every gateway and backend on the store enforces one
-- catalog. `features` is a JSON array of names; `limits` a JSON object of
-- limit names to values (null: unlimited).
CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    period TEXT NOT NULL,
    features TEXT NOT NULL,
    limits TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
