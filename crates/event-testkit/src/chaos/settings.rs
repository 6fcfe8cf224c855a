//! [`ChaosSettings`]: the seed and the length of a run, from the environment, so that any run
//! can be replayed: `EVENTBUS_CHAOS_SEED=<seed> EVENTBUS_CHAOS_SECONDS=<n> cargo test ...`.

use std::time::Duration;

use anyhow::Context as _;

/// The variable that fixes the seed of a run (decimal, or hexadecimal with `0x`).
pub const SEED_VAR: &str = "EVENTBUS_CHAOS_SEED";
/// The variable that sets how long the workload runs, in seconds (the wait for quiescence
/// and the checks come after).
pub const SECONDS_VAR: &str = "EVENTBUS_CHAOS_SECONDS";

/// What a chaos run is made from: everything random in it comes from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChaosSettings {
    /// The seed of every random choice: the workload, the handlers' behaviours, the faults
    /// and their times.
    pub seed: u64,
    /// How long publishers, operations and faults run.
    pub duration: Duration,
}

impl ChaosSettings {
    /// The seed from `EVENTBUS_CHAOS_SEED` (a fresh random one when unset) and the duration
    /// from `EVENTBUS_CHAOS_SECONDS` (`default_seconds` when unset).
    ///
    /// # Errors
    /// When a variable is set to something that is not a number.
    pub fn from_env(default_seconds: u64) -> anyhow::Result<Self> {
        let seed = match std::env::var(SEED_VAR) {
            Ok(text) if !text.trim().is_empty() => parse_seed(&text)?,
            _ => fastrand::u64(..),
        };
        let seconds = match std::env::var(SECONDS_VAR) {
            Ok(text) if !text.trim().is_empty() => {
                text.trim().parse::<u64>().with_context(|| {
                    format!("{SECONDS_VAR}={text:?} is not a whole number of seconds")
                })?
            }
            _ => default_seconds,
        };
        anyhow::ensure!(seconds >= 10, "{SECONDS_VAR} must be at least 10 seconds");
        Ok(Self {
            seed,
            duration: Duration::from_secs(seconds),
        })
    }

    /// The command line that replays this run of `test` in `package`.
    pub fn replay_hint(&self, package: &str, test: &str) -> String {
        format!(
            "{SEED_VAR}={} {SECONDS_VAR}={} cargo test -p {package} --test {test} -- --nocapture",
            self.seed,
            self.duration.as_secs()
        )
    }
}

fn parse_seed(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("{SEED_VAR}={text:?} is not a number (decimal or 0x-hex)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_decimal_or_hex() {
        assert_eq!(parse_seed("42").unwrap(), 42);
        assert_eq!(parse_seed(" 0xff ").unwrap(), 255);
        assert!(parse_seed("seed").is_err());
    }
}
