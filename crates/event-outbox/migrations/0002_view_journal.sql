-- Views stored in PostgreSQL (`PostgresView`): every event a view applied, in the order the
-- transactions that applied them committed. Every process folds it into its copy of the view.
CREATE TABLE eventbus_view_journal (
    -- The view's name (the handler's: `opportunity`, `user`, ...).
    view        TEXT NOT NULL,
    -- 1, 2, 3, ... per view without a gap: written under the view's advisory lock, so that
    -- the order of seq is the order of commit.
    seq         BIGINT NOT NULL,
    event_id    UUID NOT NULL,
    -- The event in the bus's wire format, as the handler was given it (decrypted).
    event       JSON NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (view, seq)
);
