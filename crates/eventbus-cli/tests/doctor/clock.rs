//! The clock check: this host's clock, shifted for the doctor process alone with libfaketime,
//! against the Redis server's `TIME`.

use std::path::Path;

use anyhow::{bail, ensure};
use event_testkit::{test_server, unique};

use super::{doctor, expect, redis_vars};

/// The variable `cargo xtask test` sets to libfaketime's path.
const LIBFAKETIME: &str = "EVENTBUS_TEST_LIBFAKETIME";
/// Where Debian's `faketime` package puts it.
const DEBIAN_LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime's path, or a failure saying how to get it.
fn libfaketime() -> anyhow::Result<String> {
    if let Ok(path) = std::env::var(LIBFAKETIME) {
        return Ok(path);
    }
    if Path::new(DEBIAN_LIBFAKETIME).is_file() {
        return Ok(DEBIAN_LIBFAKETIME.to_string());
    }
    bail!(
        "the clock test shifts the doctor's clock with libfaketime: `apt-get install faketime` \
         (`cargo xtask test` installs it when run as root), or set {LIBFAKETIME} to the path \
         of libfaketime.so.1"
    )
}

#[test]
fn a_host_clock_off_from_the_servers_is_found() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let library = libfaketime()?;
    let prefix = unique("doctor-clock");
    // (shift, status, words of the message): ten minutes ahead fails, twenty seconds behind
    // warns; the monotonic clock is left alone so that timeouts still measure real time.
    for (shift, status, words) in [
        ("+600s", "fail", "ahead of the server's"),
        ("-20s", "warn", "behind the server's"),
    ] {
        let mut vars = redis_vars(&url, &prefix);
        vars.extend([
            ("LD_PRELOAD", library.as_str()),
            ("FAKETIME", shift),
            ("DONT_FAKE_MONOTONIC", "1"),
        ]);
        let (code, findings) = doctor(&vars)?;
        let finding = expect(&findings, "server.clock", status, words)?;
        let expected_code = if status == "fail" { 7 } else { 6 };
        ensure!(
            code == expected_code,
            "clock shifted {shift}: exit {code}, expected {expected_code}: {finding}"
        );
        ensure!(
            finding["fix"].as_str().is_some_and(|f| f.contains("NTP")),
            "no fix naming NTP: {finding}"
        );
    }
    // Unshifted, the same setup's clock is fine.
    let (_, findings) = doctor(&redis_vars(&url, &prefix))?;
    expect(&findings, "server.clock", "ok", "ms")?;
    Ok(())
}
