//! Throwaway TLS material for the tests that speak TLS to a real server (the HTTP API, Redis,
//! Kafka): `openssl` found on the `PATH`, a scratch directory, and a CA with a server
//! certificate it signed for `127.0.0.1` and `localhost` (P-256 keys, valid one day).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

/// Finds `openssl`; `None` means skip the test, and an error means it is missing although
/// `EVENTBUS_REQUIRE_INTEGRATION=1` asks for the tests that need it.
///
/// # Errors
/// As said, in an integration run without `openssl`.
pub fn openssl() -> anyhow::Result<Option<PathBuf>> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("openssl"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(openssl) => Ok(Some(openssl)),
        None if crate::integration_required() => bail!(
            "openssl (on PATH) not found, and EVENTBUS_REQUIRE_INTEGRATION=1 requires the TLS \
             tests, which make their certificates with it: install it (Debian/Ubuntu: \
             `sudo apt-get install openssl`; macOS: `brew install openssl`)"
        ),
        None => {
            eprintln!("SKIPPED: openssl not found (Debian/Ubuntu: `apt-get install openssl`)");
            Ok(None)
        }
    }
}

/// A temporary directory, removed when dropped. Declare it before a server that uses it, so
/// the server is stopped first.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new, empty directory named after `label`.
    ///
    /// # Errors
    /// When it cannot be made.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "eventbus-tls-{label}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway CA and a server certificate it signed, for `127.0.0.1` and `localhost`.
pub struct Certificates {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The CA's key, to sign more.
    pub ca_key: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's key (PEM, as `openssl req` writes it).
    pub server_key: PathBuf,
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Certificates {
    /// A CA (`<name>-ca.crt`) and a server certificate (`<name>.crt`, `<name>.key`) in `dir`.
    ///
    /// # Errors
    /// When `openssl` fails.
    pub fn create(openssl: &Path, dir: &Path, name: &str) -> anyhow::Result<Self> {
        let certificates = Self {
            ca: dir.join(format!("{name}-ca.crt")),
            ca_key: dir.join(format!("{name}-ca.key")),
            server_cert: dir.join(format!("{name}.crt")),
            server_key: dir.join(format!("{name}.key")),
        };
        run(Command::new(openssl)
            .args(["req", "-x509", "-nodes", "-days", "1"])
            .args(EC)
            .arg("-subj")
            .arg(format!("/CN=eventbus test CA {name}"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&certificates.ca_key)
            .arg("-out")
            .arg(&certificates.ca))?;
        let csr = dir.join(format!("{name}.csr"));
        run(Command::new(openssl)
            .args(["req", "-new", "-nodes"])
            .args(EC)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&certificates.server_key)
            .arg("-out")
            .arg(&csr))?;
        certificates.sign(openssl, &csr, &certificates.server_cert)?;
        Ok(certificates)
    }

    /// Signs the request `csr` with the CA into a server certificate at `out`.
    ///
    /// # Errors
    /// When `openssl` fails.
    pub fn sign(&self, openssl: &Path, csr: &Path, out: &Path) -> anyhow::Result<()> {
        let extensions = csr.with_extension("ext");
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        run(Command::new(openssl)
            .args(["x509", "-req", "-days", "1", "-set_serial"])
            .arg(fastrand::u32(1..).to_string())
            .arg("-in")
            .arg(csr)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-CAkey")
            .arg(&self.ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(out))
    }

    /// The server's key in PKCS#8 (`PRIVATE KEY`) followed by its certificate, in one PEM file
    /// next to the certificate (what Kafka's PEM key store reads).
    ///
    /// # Errors
    /// When `openssl` fails.
    pub fn server_pem(&self, openssl: &Path) -> anyhow::Result<PathBuf> {
        let pkcs8 = Command::new(openssl)
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&self.server_key)
            .output()?;
        ensure!(pkcs8.status.success(), "openssl pkcs8 failed");
        let mut pem = pkcs8.stdout;
        pem.extend(std::fs::read(&self.server_cert)?);
        let path = self.server_cert.with_extension("pem");
        std::fs::write(&path, pem)?;
        Ok(path)
    }
}

/// Runs `command`, failing with its standard error.
///
/// # Errors
/// When it cannot start or fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
