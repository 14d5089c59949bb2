-- 0001_init.sql — the ledger's tables.
--
-- Applied by `meridianctl db migrate` inside one transaction, recorded in
-- meridian_schema_migrations. Money columns are bigint minor units; ids
-- are client-chosen 128-bit values stored as uuid (bytewise order, the
-- order in which batches lock accounts). Transfers are immutable: a
-- trigger refuses UPDATE, DELETE and TRUNCATE on them.

CREATE TABLE ledgers (
    id        integer PRIMARY KEY CHECK (id > 0),
    currency  char(3) NOT NULL UNIQUE CHECK (currency ~ '^[A-Z]{3}$'),
    scale     smallint NOT NULL CHECK (scale BETWEEN 0 AND 6)
);
INSERT INTO ledgers (id, currency, scale) VALUES
    (840, 'USD', 2), (978, 'EUR', 2), (826, 'GBP', 2),
    (756, 'CHF', 2), (392, 'JPY', 0);

CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_-]{1,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id               uuid PRIMARY KEY,
    customer_id      bigint NOT NULL REFERENCES customers(id),
    ledger           integer NOT NULL REFERENCES ledgers(id),
    code             integer NOT NULL CHECK (code >= 0),
    flags            integer NOT NULL CHECK (flags >= 0),
    debits_pending   bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted    bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending  bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted   bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    user_data_128    uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    user_data_64     bigint NOT NULL DEFAULT 0,
    user_data_32     integer NOT NULL DEFAULT 0,
    timestamp_us     bigint NOT NULL
);
CREATE INDEX accounts_customer ON accounts (customer_id, id);

CREATE SEQUENCE transfers_seq;
CREATE TABLE transfers (
    id                 uuid PRIMARY KEY,
    seq                bigint NOT NULL DEFAULT nextval('transfers_seq') UNIQUE,
    debit_account_id   uuid NOT NULL REFERENCES accounts(id),
    credit_account_id  uuid NOT NULL REFERENCES accounts(id),
    pending_id         uuid,
    amount             bigint NOT NULL CHECK (amount >= 0),
    ledger             integer NOT NULL REFERENCES ledgers(id),
    code               integer NOT NULL CHECK (code >= 0),
    flags              integer NOT NULL CHECK (flags >= 0),
    timeout_s          integer NOT NULL DEFAULT 0 CHECK (timeout_s >= 0),
    user_data_128      uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    user_data_64       bigint NOT NULL DEFAULT 0,
    user_data_32       integer NOT NULL DEFAULT 0,
    metadata           text CHECK (octet_length(metadata) <= 8192),
    customer_id        bigint NOT NULL,  -- who created it (0 = admin scope)
    timestamp_us       bigint NOT NULL
);
CREATE INDEX transfers_debit ON transfers (debit_account_id, timestamp_us, seq);
CREATE INDEX transfers_credit ON transfers (credit_account_id, timestamp_us, seq);

CREATE FUNCTION meridian_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Transfers are immutable; correct a mistake with a new transfer.';
END $$;
CREATE TRIGGER transfers_immutable BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION meridian_refuse_change();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION meridian_refuse_change();

-- The mutable state of two-phase transfers lives beside the immutable row.
CREATE TABLE pending_transfers (
    id             uuid PRIMARY KEY REFERENCES transfers(id),
    status         smallint NOT NULL CHECK (status BETWEEN 1 AND 4),
    expires_at_us  bigint NOT NULL DEFAULT 0,
    amount_posted  bigint NOT NULL DEFAULT 0 CHECK (amount_posted >= 0)
);
CREATE INDEX pending_transfers_expiry ON pending_transfers (expires_at_us)
    WHERE status = 1 AND expires_at_us > 0;

-- Balances after each transfer, for accounts with the history flag.
CREATE TABLE account_balances (
    account_id       uuid NOT NULL REFERENCES accounts(id),
    transfer_id      uuid NOT NULL,
    timestamp_us     bigint NOT NULL,
    debits_pending   bigint NOT NULL,
    debits_posted    bigint NOT NULL,
    credits_pending  bigint NOT NULL,
    credits_posted   bigint NOT NULL,
    PRIMARY KEY (account_id, timestamp_us, transfer_id)
);

CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    customer_id  bigint REFERENCES customers(id), -- NULL for admin keys
    scope        text NOT NULL CHECK (scope IN ('customer', 'admin')),
    lookup_hash  bytea NOT NULL UNIQUE,            -- keyed BLAKE2b-256 of the key
    prefix       text NOT NULL,                    -- first characters, for operators
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK ((scope = 'admin') = (customer_id IS NULL))
);

-- Background jobs (read with FOR UPDATE SKIP LOCKED): they live in the
-- cell's database so they fail over with the money.
CREATE TABLE jobs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    run_at      timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    done_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_ready ON jobs (run_at) WHERE done_at IS NULL;
