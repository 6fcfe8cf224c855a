//! Chromium and its WebDriver server, `chromedriver`, for the dashboard's browser tests
//! (`crates/event-manager/tests/dashboard.rs`). Not a server that xtask runs: each test starts
//! its own chromedriver, which starts a headless Chromium. xtask only makes sure both are
//! installed (Debian's `chromium` and `chromium-driver`, installed when missing and xtask runs
//! as root, as `redis-server` is) and tells the tests where chromedriver is.

use std::path::PathBuf;

use anyhow::{Context, bail};

use super::process::{find_program, install_with_apt, is_root};

/// `/usr/bin/chromedriver`: the WebDriver server the browser tests start.
pub(crate) const CHROMEDRIVER_VAR: &str = "EVENTBUS_TEST_CHROMEDRIVER";

/// Where Debian puts them, when they are not on `PATH`.
const SEARCH_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin"];
/// Debian's packages: the browser, and the driver built from the same sources.
const PACKAGES: &[&str] = &["chromium", "chromium-driver"];

const HOW_TO_INSTALL: &str = "\
Chromium and chromedriver are needed for the dashboard's browser tests. Install them: \
`sudo apt-get install chromium chromium-driver` (Debian; `cargo xtask test` does this itself \
when run as root), or Google Chrome with the chromedriver of the same version from \
https://googlechromelabs.github.io/chrome-for-testing/ and set EVENTBUS_TEST_CHROMEDRIVER to \
the driver's path (docs/testing.md)";

/// chromedriver (and a Chromium for it to start): found on `PATH` or in `/usr/bin`, else
/// installed from Debian's packages when xtask runs as root.
pub(crate) fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Ok(given) = std::env::var(CHROMEDRIVER_VAR)
        && !given.is_empty()
    {
        return Ok(PathBuf::from(given));
    }
    let browser = find_program("chromium", SEARCH_DIRS)
        .or_else(|| find_program("google-chrome", SEARCH_DIRS));
    if let (Some(driver), Some(_)) = (find_program("chromedriver", SEARCH_DIRS), browser) {
        return Ok(driver);
    }
    if !is_root() {
        bail!(
            "chromium or chromedriver is not installed (looked on PATH and in /usr/bin). {HOW_TO_INSTALL}"
        );
    }
    eprintln!(
        "xtask: chromium or chromedriver is not installed; installing Debian's `chromium` and \
         `chromium-driver` packages (running as root)"
    );
    install_with_apt(PACKAGES)
        .with_context(|| format!("installing chromium failed. {HOW_TO_INSTALL}"))?;
    find_program("chromedriver", SEARCH_DIRS).with_context(|| {
        format!(
            "`apt-get install chromium chromium-driver` succeeded but chromedriver is still not \
             found. {HOW_TO_INSTALL}"
        )
    })
}

/// The variable that tells the browser tests where chromedriver is.
pub(crate) fn env(chromedriver: &std::path::Path) -> (&'static str, String) {
    (CHROMEDRIVER_VAR, chromedriver.display().to_string())
}
