-- The outbox: events added inside the application's transactions, waiting for the relay.
CREATE TABLE eventbus_outbox (
    -- Claim order: a key's events are published in this order.
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event's id, kept on the bus so that consumers can deduplicate.
    event_id      UUID NOT NULL UNIQUE,
    -- Event::ordering_key: the partition key, else the event id (an unkeyed event is alone).
    ordering_key  TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    -- The event in the bus's wire format (JSON text as written, not re-ordered as jsonb).
    event         JSON NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Failed publish attempts (transient failures; a permanent one parks the row).
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    delivered_at  TIMESTAMPTZ,
    -- Set with parked_reason when the bus refused the event for good.
    parked_at     TIMESTAMPTZ,
    parked_reason TEXT
);

-- What the relay claims: pending rows in sequence order, and a key's pending rows.
CREATE INDEX eventbus_outbox_pending ON eventbus_outbox (seq)
    WHERE delivered_at IS NULL AND parked_at IS NULL;
CREATE INDEX eventbus_outbox_pending_by_key ON eventbus_outbox (ordering_key, seq)
    WHERE delivered_at IS NULL AND parked_at IS NULL;
-- What the retention clean-up deletes.
CREATE INDEX eventbus_outbox_delivered ON eventbus_outbox (delivered_at)
    WHERE delivered_at IS NOT NULL;
CREATE INDEX eventbus_outbox_parked ON eventbus_outbox (parked_at)
    WHERE parked_at IS NOT NULL;

-- The inbox: "handler H handled event X", written in the handler's own transaction.
CREATE TABLE eventbus_inbox (
    handler     TEXT NOT NULL,
    event_id    UUID NOT NULL,
    handled_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, event_id)
);

-- What the duplicate-detection window's clean-up deletes.
CREATE INDEX eventbus_inbox_handled_at ON eventbus_inbox (handled_at);
