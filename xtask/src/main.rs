//! Project automation, run as `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! One file per command. Arguments are parsed by hand to keep this crate's dependencies few:
//! `anyhow`, plus `event-publishers` and `serde_json` for `docs`, which renders the event
//! catalog from the code.

mod alerts;
mod bench;
mod docs;
mod integration_test;
mod services;
mod shell;
mod soak;
mod suites;
mod test;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [arguments]

commands:
  test                        everything CI runs: rustfmt check, clippy (-D warnings), and
                              `cargo test --workspace` with EVENTBUS_REQUIRE_INTEGRATION=1,
                              against a throwaway redis-server, Redis Cluster and Kafka
                              broker for the backends in the workspace
  integration-test [backend]  the backends' integration tests alone (all, or one backend):
                              the event-testkit conformance suite and the backend crate's tests
  services up [service]...    start redis, redis-cluster, kafka and/or kafka-cluster (also
                              `redis --cluster`: three masters with a replica each;
                              `kafka --brokers 3`: three KRaft nodes) in the background; prints
                              `export EVENTBUS_TEST_...` lines: eval \"$(cargo xtask services up)\"
  services down [service]...|status
                              stop them (all, or those named), or say whether they run
  services kill|restart <s> [node]
                              kill one (SIGKILL, data kept), or start it again on the same port;
                              of a cluster, every node or one (redis-cluster 1 to 6,
                              kafka-cluster 1 to 3)
  bench [backend]             the benchmarks in release mode (all, or one backend); each
                              writes its section of docs/benchmarks.md
  soak [backend] --minutes N [--seed S]
                              the chaos harness run long (default 30 minutes; all backends,
                              or one) in release mode, with its summary as a table row for
                              docs/reliability.md
  docs [--check|--docs-rs]    render the event catalog into docs/events.md and
                              docs/asyncapi.json, and the variable tables into
                              docs/configuration.md; --check fails when they are stale;
                              --docs-rs renders the API docs as docs.rs does (nightly)
  help                        this text

backends: memory, redis, kafka; bench also takes kafka-cluster (the Kafka benchmark on three nodes,
replication factor 3), redis-cluster, publishers (the batch publisher on memory,
redis and kafka), outbox (the PostgreSQL outbox's relay and inbox) and dashboard;
services: redis, redis-cluster, kafka, kafka-cluster, postgres, browser (docs/testing.md)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["help" | "-h" | "--help", ..] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["test", rest @ ..] => no_arguments("test", rest).and_then(|()| test::run()),
        ["integration-test", rest @ ..] => integration_test::run(rest),
        ["services", rest @ ..] => services::command::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        ["docs", rest @ ..] => docs::run(rest),
        ["soak", rest @ ..] => soak::run(rest),
        [other, ..] => Err(anyhow::anyhow!(
            "unknown command {other:?}; run `cargo xtask help` for the list"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn no_arguments(command: &str, rest: &[&str]) -> anyhow::Result<()> {
    match rest {
        [] => Ok(()),
        _ => anyhow::bail!(
            "`cargo xtask {command}` takes no arguments, found {rest:?}; run `cargo xtask help`"
        ),
    }
}
