//! Finding the test servers that `cargo xtask` starts, with one rule for every backend's
//! integration tests: a missing server fails an integration run, and is reported loudly (never
//! skipped in silence) otherwise.

/// Whether an integration run was asked for (`EVENTBUS_REQUIRE_INTEGRATION=1`, set by
/// `cargo xtask test`): a server that is missing then fails the tests.
pub fn integration_required() -> bool {
    std::env::var("EVENTBUS_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1")
}

/// The address in `variable` (such as `EVENTBUS_TEST_REDIS_URL`), set by `cargo xtask` for
/// the server `service` (`redis`, `kafka`).
///
/// # Errors
/// When the variable is unset in an integration run, with a message that says how to start
/// the server. Outside one, `Ok(None)` after printing `SKIPPED` to stderr.
pub fn test_server(variable: &str, service: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ if integration_required() => anyhow::bail!(
            "{variable} is not set: run `cargo xtask test`, or start the server with \
             `eval \"$(cargo xtask services up {service})\"` and run the tests again"
        ),
        _ => {
            eprintln!(
                "SKIPPED: no {service} server (set {variable}, or run `cargo xtask test`, which starts one)"
            );
            Ok(None)
        }
    }
}

/// A name no other test run uses, for the key prefixes, topics and groups a test creates on a
/// shared server: `{prefix}-` and 16 random hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// A fresh PostgreSQL schema name for a test (`{prefix}_` and 16 random hex digits), and
/// `url` with that schema first in its search path (sqlx's `options[search_path]`), so the
/// test's tables live apart from every other run's. The test creates the schema.
pub fn postgres_schema(url: &str, prefix: &str) -> (String, String) {
    let schema = unique(prefix).replace('-', "_");
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options[search_path]={schema}");
    (schema, url)
}
