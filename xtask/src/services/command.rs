//! `cargo xtask services up|down|status|kill|restart`: the test servers, detached, for running
//! one crate's integration tests by hand.
//!
//! `up` prints only `export EVENTBUS_TEST_...='...'` lines on standard output (progress goes
//! to standard error), so `eval "$(cargo xtask services up)"` sets up the shell.

use anyhow::bail;

use super::state::{Record, State, state_path};
use super::{KafkaBroker, Lifetime, RedisServer, Service, kafka_env, redis_env};

const USAGE: &str = "\
usage: cargo xtask services <up [redis|kafka]... | down | status | kill <service> | restart <service>>
  up       start the servers (default: redis and kafka) in the background; print their
           EVENTBUS_TEST_* variables as `export` lines: eval \"$(cargo xtask services up)\"
  down     stop them and delete their data
  status   say whether each runs; print the variables of those that do
  kill     kill one with SIGKILL, as a crash would (its data stays)
  restart  start it again on the same port with the same data";

/// Runs `cargo xtask services ...`.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["up", names @ ..] => up(names),
        ["down"] => down(),
        ["status"] => status(),
        ["kill", name] => kill(Service::parse(name)?),
        ["restart", name] => restart(Service::parse(name)?),
        _ => bail!("{USAGE}"),
    }
}

/// One server, whichever kind.
enum Server {
    Redis(RedisServer),
    Kafka(KafkaBroker),
}

impl Server {
    fn start(service: Service) -> anyhow::Result<Self> {
        Ok(match service {
            Service::Redis => Server::Redis(RedisServer::start(Lifetime::Detached)?),
            Service::Kafka => Server::Kafka(KafkaBroker::start(Lifetime::Detached)?),
        })
    }

    fn adopt(service: Service, record: &Record) -> anyhow::Result<Self> {
        Ok(match service {
            Service::Redis => Server::Redis(RedisServer::adopt(record)?),
            Service::Kafka => Server::Kafka(KafkaBroker::adopt(record)?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Server::Redis(r) => format!("redis-server on 127.0.0.1:{} (pid {})", r.port(), r.pid()),
            Server::Kafka(k) => format!(
                "Kafka {} broker on {} (pid {})",
                k.version(),
                k.bootstrap_servers(),
                k.pid()
            ),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Server::Redis(r) => redis_env(r).to_vec(),
            Server::Kafka(k) => kafka_env(k).to_vec(),
        }
    }

    fn record(&self) -> Record {
        match self {
            Server::Redis(r) => r.record(),
            Server::Kafka(k) => k.record(),
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            Server::Redis(r) => r.is_running(),
            Server::Kafka(k) => k.is_running(),
        }
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Redis(r) => r.kill(),
            Server::Kafka(k) => k.kill(),
        }
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Redis(r) => r.restart(),
            Server::Kafka(k) => k.restart(),
        }
    }

    fn detach(self) {
        match self {
            Server::Redis(r) => r.detach(),
            Server::Kafka(k) => k.detach(),
        }
    }

    fn shut_down(self) -> anyhow::Result<()> {
        match self {
            Server::Redis(r) => r.shut_down(),
            Server::Kafka(k) => k.shut_down(),
        }
    }
}

fn up(names: &[&str]) -> anyhow::Result<()> {
    let mut wanted: Vec<Service> = Vec::new();
    for name in names {
        let service = Service::parse(name)?;
        if !wanted.contains(&service) {
            wanted.push(service);
        }
    }
    if wanted.is_empty() {
        wanted = Service::ALL.to_vec();
    }
    let mut state = State::load()?;
    let mut env = Vec::new();
    // Until every server is up, these handles stop what this call started if a later one
    // fails: `up` starts all it was asked for, or nothing.
    let mut started = Vec::new();
    for service in wanted {
        if let Some(record) = state.services.get(service.name()) {
            let mut recorded = Server::adopt(service, record)?;
            if recorded.is_running() {
                eprintln!("xtask: {} already runs", recorded.describe());
                env.extend(recorded.env());
                continue;
            }
            eprintln!(
                "xtask: the recorded {} is gone; starting a new one",
                recorded.describe()
            );
            recorded.shut_down()?;
            state.services.remove(service.name());
        }
        let server = Server::start(service)?;
        env.extend(server.env());
        state
            .services
            .insert(service.name().to_string(), server.record());
        started.push(server);
    }
    state.save()?;
    for server in started {
        server.detach();
    }
    print_exports(&env);
    eprintln!(
        "xtask: recorded in {}; stop with `cargo xtask services down`",
        state_path().display()
    );
    Ok(())
}

fn down() -> anyhow::Result<()> {
    let mut state = State::load()?;
    if state.services.is_empty() {
        eprintln!(
            "xtask: no services recorded in {}; nothing to stop",
            state_path().display()
        );
        return Ok(());
    }
    let mut failures = Vec::new();
    for (name, record) in std::mem::take(&mut state.services) {
        let stopped = Service::parse(&name)
            .and_then(|service| Server::adopt(service, &record))
            .and_then(|server| {
                let described = server.describe();
                server.shut_down().map(|()| described)
            });
        match stopped {
            Ok(described) => eprintln!("xtask: stopped {described}"),
            Err(e) => {
                failures.push(format!("{name}: {e:#}"));
                state.services.insert(name, record);
            }
        }
    }
    state.save()?;
    if !failures.is_empty() {
        bail!("could not stop every service:\n{}", failures.join("\n"));
    }
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let state = State::load()?;
    if state.services.is_empty() {
        eprintln!("xtask: no services recorded; start them with `cargo xtask services up`");
        return Ok(());
    }
    let mut env = Vec::new();
    for (name, record) in &state.services {
        let mut server = Server::adopt(Service::parse(name)?, record)?;
        if server.is_running() {
            eprintln!("xtask: {}: running", server.describe());
            env.extend(server.env());
        } else {
            eprintln!(
                "xtask: {}: not running (`cargo xtask services restart {name}` starts it again)",
                server.describe()
            );
        }
    }
    print_exports(&env);
    Ok(())
}

fn kill(service: Service) -> anyhow::Result<()> {
    let mut server = recorded(service)?;
    server.kill()?;
    eprintln!(
        "xtask: killed {}; its data stays: `cargo xtask services restart {}`",
        server.describe(),
        service.name()
    );
    Ok(())
}

fn restart(service: Service) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let mut server = recorded(service)?;
    server.restart()?;
    state
        .services
        .insert(service.name().to_string(), server.record());
    state.save()?;
    print_exports(&server.env());
    Ok(())
}

fn recorded(service: Service) -> anyhow::Result<Server> {
    let state = State::load()?;
    match state.services.get(service.name()) {
        Some(record) => Server::adopt(service, record),
        None => bail!(
            "no {} server recorded in {}; start one with `cargo xtask services up {}`",
            service.name(),
            state_path().display(),
            service.name()
        ),
    }
}

/// Prints `export NAME='value'` lines: the quotes keep the class path's `*` from being
/// expanded by the shell, whether the output is `eval`ed quoted or not.
fn print_exports(env: &[(&'static str, String)]) {
    for (name, value) in env {
        println!("{}", export_line(name, value));
    }
}

fn export_line(name: &str, value: &str) -> String {
    format!("export {name}='{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_quoted_for_the_shell() {
        assert_eq!(
            export_line("EVENTBUS_TEST_KAFKA_CLASSPATH", "/a b/libs/*"),
            "export EVENTBUS_TEST_KAFKA_CLASSPATH='/a b/libs/*'"
        );
        assert_eq!(export_line("X", "it's"), r"export X='it'\''s'");
    }

    #[test]
    fn bad_arguments_show_the_usage() {
        for args in [&[][..], &["start"], &["kill"], &["kill", "redis", "now"]] {
            let message = run(args).unwrap_err().to_string();
            assert!(message.starts_with("usage:"), "{message}");
        }
        assert!(
            run(&["up", "mysql"])
                .unwrap_err()
                .to_string()
                .contains("unknown service")
        );
    }
}
