//! The Apache Kafka jars: resolved by Maven from `xtask/kafka/pom.xml` into
//! `target/xtask-cache/kafka-<version>/libs`, once per machine (and again when the pom changes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::cache_dir;
use super::process::find_program;
use crate::shell::{self, project_root};

/// The pom naming the broker, the tools and the logging binding, relative to the workspace.
pub(crate) const POM: &str = "xtask/kafka/pom.xml";

pub(crate) const HOW_TO_GET_JAVA: &str = "\
Kafka runs from the official Apache Kafka jars, which Maven fetches from Maven Central: it \
needs Java 17 or newer (`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME) and Maven \
(`apt-get install maven`). Or run Kafka with Docker (`docker compose -f \
docker/docker-compose.yml --profile kafka up -d kafka`) and run the Kafka tests by hand with \
EVENTBUS_TEST_KAFKA_BROKERS=127.0.0.1:9092 (docs/testing.md)";

/// The jars of one Kafka release, ready to run.
#[derive(Clone, Debug)]
pub(crate) struct KafkaJars {
    pub(crate) version: String,
    pub(crate) libs: PathBuf,
}

impl KafkaJars {
    /// The jars for the pom's `kafka.version`, fetched with Maven unless already cached.
    pub(crate) fn resolve() -> anyhow::Result<Self> {
        let pom_path = project_root().join(POM);
        let pom = std::fs::read_to_string(&pom_path)
            .with_context(|| format!("reading {}", pom_path.display()))?;
        let version = pom_property(&pom, "kafka.version")
            .with_context(|| format!("{POM} has no <kafka.version> property"))?;
        let cache = cache_dir().join(format!("kafka-{version}"));
        let jars = KafkaJars {
            libs: cache.join("libs"),
            version,
        };
        // The copy of the pom the cache was made from: a changed pom is fetched again.
        let stamp = cache.join("pom.xml");
        if jars.libs.is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == pom) {
            return Ok(jars);
        }
        jars.fetch(&pom_path, &cache)?;
        std::fs::write(&stamp, &pom).with_context(|| format!("writing {}", stamp.display()))?;
        Ok(jars)
    }

    /// `<libs>/*`: the class path for `java -cp`.
    pub(crate) fn classpath(&self) -> String {
        format!("{}/*", self.libs.display())
    }

    fn fetch(&self, pom_path: &Path, cache: &Path) -> anyhow::Result<()> {
        let Some(mvn) = find_program("mvn", &["/usr/bin"]) else {
            bail!("Maven (`mvn`) is not installed. {HOW_TO_GET_JAVA}");
        };
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        // Copied beside the cache and renamed into place, so an interrupted fetch is never
        // taken for a complete one, and two xtask runs fetching at once do not mix.
        let staging = cache.join(format!("libs.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        eprintln!(
            "xtask: fetching the Apache Kafka {} jars with Maven into {} (once per machine)",
            self.version,
            self.libs.display()
        );
        let started = Instant::now();
        let mut command = Command::new(mvn);
        command
            .args(["-B", "-q", "-Dstyle.color=never", "-f"])
            .arg(pom_path)
            .arg("dependency:copy-dependencies")
            .arg(format!("-DoutputDirectory={}", staging.display()))
            .current_dir(project_root());
        shell::run_to_stderr("fetch the Kafka jars", &mut command)
            .with_context(|| format!("Maven could not fetch the Kafka jars. {HOW_TO_GET_JAVA}"))?;
        let broker_jar = staging.join(format!("kafka_2.13-{}.jar", self.version));
        if !broker_jar.is_file() {
            bail!(
                "Maven ran but {} is missing; check {POM}",
                broker_jar.display()
            );
        }
        if self.libs.exists() {
            std::fs::remove_dir_all(&self.libs)
                .with_context(|| format!("removing the old {}", self.libs.display()))?;
        }
        if let Err(e) = std::fs::rename(&staging, &self.libs) {
            // Another run finished first: use its copy.
            let _ = std::fs::remove_dir_all(&staging);
            if !self.libs.is_dir() {
                return Err(e)
                    .with_context(|| format!("moving the jars to {}", self.libs.display()));
            }
        }
        eprintln!(
            "xtask: fetched {} jars in {:.1}s",
            std::fs::read_dir(&self.libs).map_or(0, Iterator::count),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// `java`: `$JAVA_HOME/bin/java` when `JAVA_HOME` is set, else the one on `PATH`.
pub(crate) fn java() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        let java = PathBuf::from(home).join("bin/java");
        if java.is_file() {
            return Ok(java);
        }
        bail!(
            "JAVA_HOME is set but {} does not exist. {HOW_TO_GET_JAVA}",
            java.display()
        );
    }
    find_program("java", &["/usr/bin"])
        .with_context(|| format!("Java (`java`) is not installed. {HOW_TO_GET_JAVA}"))
}

/// The value of `<name>value</name>` in the pom's text (a property; no XML parser needed for
/// the one pom we write ourselves).
fn pom_property(pom: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = pom.find(&open)? + open.len();
    let end = start + pom[start..].find(&format!("</{name}>"))?;
    let value = pom[start..end].trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_version_is_read_from_the_pom() {
        let pom = std::fs::read_to_string(project_root().join(POM)).unwrap();
        let version = pom_property(&pom, "kafka.version").unwrap();
        assert!(version.starts_with("4."), "{version}");
        assert_eq!(
            pom_property("<p><a.b> 1.2 </a.b></p>", "a.b").as_deref(),
            Some("1.2")
        );
        assert_eq!(pom_property("<a.b></a.b>", "a.b"), None);
        assert_eq!(pom_property("<a.b>1", "a.b"), None);
    }
}
