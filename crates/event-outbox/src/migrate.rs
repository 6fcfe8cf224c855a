//! The schema: the migrations shipped in `migrations/`, embedded at compile time and applied
//! on request by [`migrate`].
//!
//! They are recorded in a table of their own, `eventbus_outbox_migrations`, not in sqlx's
//! `_sqlx_migrations`: an application that runs its own sqlx migrations in the same schema
//! would otherwise find versions it does not know and refuse to start.

use sqlx::{PgPool, Row as _};

use crate::OutboxError;

/// One migration: a version, what it does, and its SQL.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox and inbox",
        sql: include_str!("../migrations/0001_outbox_and_inbox.sql"),
    },
    Migration {
        version: 2,
        description: "view journal",
        sql: include_str!("../migrations/0002_view_journal.sql"),
    },
];

/// The newest migration this crate ships.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The versions applied by this call, oldest first (empty when the schema was current).
    pub applied: Vec<i64>,
    /// The schema's version now.
    pub version: i64,
}

/// Creates or updates the outbox and inbox tables in the connection's current schema (the
/// first of its `search_path`), in one transaction. Concurrent callers wait for each other
/// (a transaction-scoped advisory lock), so every process may call it at start-up.
///
/// # Errors
/// [`OutboxError::Database`] when a statement fails (nothing is applied then).
pub async fn migrate(pool: &PgPool) -> Result<MigrationReport, OutboxError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('eventbus_outbox_migrations:' || current_schema()))",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS eventbus_outbox_migrations (
             version     BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await?;
    let done: Vec<i64> = sqlx::query("SELECT version FROM eventbus_outbox_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let mut report = MigrationReport::default();
    for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO eventbus_outbox_migrations (version, description) VALUES ($1, $2)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *tx)
        .await?;
        report.applied.push(migration.version);
    }
    tx.commit().await?;
    report.version = done
        .iter()
        .chain(&report.applied)
        .copied()
        .max()
        .unwrap_or(0);
    Ok(report)
}

/// Checks that [`migrate`] has brought the schema to this crate's version.
///
/// # Errors
/// [`OutboxError::SchemaOutdated`], or [`OutboxError::Database`].
pub async fn check_schema(pool: &PgPool) -> Result<(), OutboxError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('eventbus_outbox_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let found: i64 = if exists {
        sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM eventbus_outbox_migrations")
            .fetch_one(pool)
            .await?
    } else {
        0
    };
    if found < SCHEMA_VERSION {
        return Err(OutboxError::SchemaOutdated {
            found,
            needed: SCHEMA_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_and_the_newest_is_the_schema_version() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(versions.last(), Some(&SCHEMA_VERSION));
    }
}
