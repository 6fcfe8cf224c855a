//! `promtool`, Prometheus's checker, for the alerting rules in `docker/prometheus/`. Not a
//! server: xtask only makes sure it is installed (Debian's `prometheus` package, installed when
//! missing and xtask runs as root, as `redis-server` is).

use std::path::PathBuf;

use anyhow::{Context, bail};

use super::process::{find_program, install_with_apt, is_root};

const SEARCH_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin"];

const HOW_TO_INSTALL: &str = "\
promtool checks the Prometheus rules in docker/prometheus/. Install it: `sudo apt-get install \
prometheus` (Debian; `cargo xtask test` does this itself when run as root), or put the \
promtool of a Prometheus release (https://prometheus.io/download/) on PATH";

/// `promtool`: found on `PATH` or in `/usr/bin`, else installed from Debian's `prometheus`
/// package when xtask runs as root.
pub(crate) fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Some(found) = find_program("promtool", SEARCH_DIRS) {
        return Ok(found);
    }
    if !is_root() {
        bail!("promtool is not installed (looked on PATH and in /usr/bin). {HOW_TO_INSTALL}");
    }
    eprintln!(
        "xtask: promtool is not installed; installing Debian's `prometheus` package (running \
         as root)"
    );
    install_with_apt(&["prometheus"])
        .with_context(|| format!("installing prometheus failed. {HOW_TO_INSTALL}"))?;
    find_program("promtool", SEARCH_DIRS).with_context(|| {
        format!(
            "`apt-get install prometheus` succeeded but promtool is still not found. \
             {HOW_TO_INSTALL}"
        )
    })
}
