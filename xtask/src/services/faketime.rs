//! libfaketime, which shifts one process's clock, for the test that `eventbus doctor` finds a
//! host clock off from the server's. Not a server: xtask only makes sure it is installed
//! (Debian's `faketime` package, installed when missing and xtask runs as root, as
//! `promtool` is), and hands its path to the tests as `EVENTBUS_TEST_LIBFAKETIME`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::process::{install_with_apt, is_root};

/// The variable the tests read the library's path from.
pub(crate) const VAR: &str = "EVENTBUS_TEST_LIBFAKETIME";

/// Where Debian's `libfaketime` puts the library.
const PLACES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

const HOW_TO_INSTALL: &str = "\
libfaketime shifts the clock of the `eventbus doctor` process in the test of its clock check. \
Install it: `sudo apt-get install faketime` (Debian; `cargo xtask test` does this itself when \
run as root), or set EVENTBUS_TEST_LIBFAKETIME to the path of libfaketime.so.1";

/// The path of `libfaketime.so.1`: found in Debian's places, else installed from Debian's
/// `faketime` package when xtask runs as root.
pub(crate) fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Some(found) = find() {
        return Ok(found);
    }
    if !is_root() {
        bail!("libfaketime is not installed (looked in {PLACES:?}). {HOW_TO_INSTALL}");
    }
    eprintln!(
        "xtask: libfaketime is not installed; installing Debian's `faketime` package (running \
         as root)"
    );
    install_with_apt(&["faketime"])
        .with_context(|| format!("installing faketime failed. {HOW_TO_INSTALL}"))?;
    find().with_context(|| {
        format!("`apt-get install faketime` succeeded but libfaketime.so.1 is still not found. {HOW_TO_INSTALL}")
    })
}

fn find() -> Option<PathBuf> {
    PLACES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}
