//! `cargo xtask services up|down|status|kill|restart`: the test servers, detached, for running
//! one crate's integration tests by hand.
//!
//! `up` prints only `export EVENTBUS_TEST_...='...'` lines on standard output (progress goes
//! to standard error), so `eval "$(cargo xtask services up)"` sets up the shell.

use anyhow::bail;

use super::state::{Record, State, state_path};
use super::{
    CLUSTER_SIZE, KafkaBroker, KafkaCluster, Lifetime, PostgresServer, RedisCluster, RedisServer,
    Service, kafka_cluster_env, kafka_env, postgres_env, redis_cluster_env, redis_env,
    unique_names,
};

const USAGE: &str = "\
usage: cargo xtask services <up [redis [--cluster]|redis-cluster|kafka [--brokers 3]|kafka-cluster|postgres|browser]...
                             | down [service]... | status | kill <service> [node]
                             | restart <service> [node]>
  up       start the servers (default: redis and kafka) in the background; print their
           EVENTBUS_TEST_* variables as `export` lines: eval \"$(cargo xtask services up)\"
           `redis --cluster` (or `redis-cluster`) is a Redis Cluster of three masters with a
           replica each, nodes 1 to 6 (EVENTBUS_TEST_REDIS_CLUSTER_URL), beside the single
           server; `kafka --brokers 3` (or `kafka-cluster`) is a cluster of three KRaft nodes
           (EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS), beside the single broker; `postgres` is
           PostgreSQL in a fresh cluster (EVENTBUS_TEST_POSTGRES_URL, and its programs in
           EVENTBUS_TEST_POSTGRES_BIN); `browser`
           starts nothing: it installs Chromium and chromedriver when missing (as root) and
           prints EVENTBUS_TEST_CHROMEDRIVER for the dashboard's browser tests
  down     stop them (all, or those named) and delete their data
  status   say whether each runs; print the variables of those that do
  kill     kill one with SIGKILL, as a crash would (its data stays); of a cluster, every
           node or one node (redis-cluster: 1 to 6, kafka-cluster: 1 to 3)
  restart  start it again on the same port with the same data (of a cluster: the nodes that
           are down, or the node named; a Redis Cluster is then waited for until whole)";

/// Runs `cargo xtask services ...`.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["up", names @ ..] => {
            // `browser` is no server: Chromium and chromedriver, installed when missing.
            let servers: Vec<&str> = names.iter().copied().filter(|n| *n != "browser").collect();
            if servers.len() < names.len() {
                let driver = super::browser::find_or_install()?;
                eprintln!("xtask: chromedriver is {}", driver.display());
                print_exports(&[super::browser::env(&driver)]);
                if servers.is_empty() {
                    return Ok(());
                }
            }
            up(&wanted(&servers)?)
        }
        ["down", names @ ..] => down(&named(names)?),
        ["status"] => status(),
        ["kill", name] => kill(Service::parse(name)?, None),
        ["restart", name] => restart(Service::parse(name)?, None),
        ["kill", name, node] => {
            let service = Service::parse(name)?;
            kill(service, Some(node_id(service, node)?))
        }
        ["restart", name, node] => {
            let service = Service::parse(name)?;
            restart(service, Some(node_id(service, node)?))
        }
        _ => bail!("{USAGE}"),
    }
}

/// The services `up` was asked for: names, where `kafka --brokers 3` is the cluster and
/// `kafka --brokers 1` the single broker, and `redis --cluster` the Redis Cluster; none is
/// the default set.
fn wanted(args: &[&str]) -> anyhow::Result<Vec<Service>> {
    let wanted = named(args)?;
    if wanted.is_empty() {
        return Ok(Service::DEFAULT.to_vec());
    }
    Ok(wanted)
}

/// The services named (as for `up`), each once; none is none.
fn named(args: &[&str]) -> anyhow::Result<Vec<Service>> {
    let mut wanted: Vec<Service> = Vec::new();
    let mut args = args.iter().peekable();
    while let Some(name) = args.next() {
        let mut service = Service::parse(name)?;
        if args.peek() == Some(&&"--cluster") {
            args.next();
            service = match service {
                Service::Redis | Service::RedisCluster => Service::RedisCluster,
                _ => bail!(
                    "--cluster follows `redis`, not `{name}` (a Kafka cluster is `kafka --brokers {CLUSTER_SIZE}`)"
                ),
            };
        } else if args.peek() == Some(&&"--brokers") {
            args.next();
            let count = args.next().copied().unwrap_or_default();
            service = match (service, count.parse::<usize>()) {
                (Service::Kafka, Ok(1)) => Service::Kafka,
                (Service::Kafka, Ok(n)) if n == CLUSTER_SIZE => Service::KafkaCluster,
                (Service::Kafka, _) => bail!(
                    "`kafka --brokers` takes 1 (a single broker) or {CLUSTER_SIZE} (a cluster), found {count:?}"
                ),
                _ => bail!("--brokers follows `kafka`, not `{name}`"),
            };
        }
        if !wanted.contains(&service) {
            wanted.push(service);
        }
    }
    Ok(wanted)
}

/// Node `text` of the cluster `service`: 1 to its node count.
fn node_id(service: Service, text: &str) -> anyhow::Result<u32> {
    let Some(nodes) = service.nodes() else {
        bail!(
            "{} is a single server, with no nodes to name\n{USAGE}",
            service.name()
        );
    };
    match text.parse::<u32>() {
        Ok(id) if (1..=nodes as u32).contains(&id) => Ok(id),
        _ => bail!(
            "a node of {} is 1 to {nodes}, found {text:?}\n{USAGE}",
            service.name()
        ),
    }
}

/// One server, whichever kind.
enum Server {
    Redis(RedisServer),
    RedisCluster(RedisCluster),
    Kafka(KafkaBroker),
    KafkaCluster(KafkaCluster),
    Postgres(PostgresServer),
}

impl Server {
    fn start(service: Service) -> anyhow::Result<Self> {
        Ok(match service {
            Service::Redis => Server::Redis(RedisServer::start(Lifetime::Detached)?),
            Service::RedisCluster => Server::RedisCluster(RedisCluster::start(Lifetime::Detached)?),
            Service::Kafka => Server::Kafka(KafkaBroker::start(Lifetime::Detached)?),
            Service::KafkaCluster => Server::KafkaCluster(KafkaCluster::start(Lifetime::Detached)?),
            Service::Postgres => Server::Postgres(PostgresServer::start(Lifetime::Detached)?),
        })
    }

    fn adopt(service: Service, record: &Record) -> anyhow::Result<Self> {
        Ok(match service {
            Service::Redis => Server::Redis(RedisServer::adopt(record)?),
            Service::RedisCluster => Server::RedisCluster(RedisCluster::adopt(record)?),
            Service::Kafka => Server::Kafka(KafkaBroker::adopt(record)?),
            Service::KafkaCluster => Server::KafkaCluster(KafkaCluster::adopt(record)?),
            Service::Postgres => Server::Postgres(PostgresServer::adopt(record)?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Server::Redis(r) => format!("redis-server on 127.0.0.1:{} (pid {})", r.port(), r.pid()),
            Server::RedisCluster(c) => format!(
                "Redis Cluster of nodes 1 to {} on ports {:?} (pids {:?})",
                c.ports().len(),
                c.ports(),
                c.pids()
            ),
            Server::Kafka(k) => format!(
                "Kafka {} broker on {} (pid {})",
                k.version(),
                k.bootstrap_servers(),
                k.pid()
            ),
            Server::KafkaCluster(c) => format!(
                "Kafka {} cluster on {} (pids {:?})",
                c.version(),
                c.bootstrap_servers(),
                c.pids()
            ),
            Server::Postgres(p) => format!("postgres on 127.0.0.1:{} (pid {})", p.port(), p.pid()),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Server::Redis(r) => redis_env(r).to_vec(),
            Server::RedisCluster(c) => redis_cluster_env(c).to_vec(),
            Server::Kafka(k) => kafka_env(k).to_vec(),
            Server::KafkaCluster(c) => kafka_cluster_env(c).to_vec(),
            Server::Postgres(p) => postgres_env(p).to_vec(),
        }
    }

    fn record(&self) -> Record {
        match self {
            Server::Redis(r) => r.record(),
            Server::RedisCluster(c) => c.record(),
            Server::Kafka(k) => k.record(),
            Server::KafkaCluster(c) => c.record(),
            Server::Postgres(p) => p.record(),
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            Server::Redis(r) => r.is_running(),
            Server::RedisCluster(c) => c.is_running(),
            Server::Kafka(k) => k.is_running(),
            Server::KafkaCluster(c) => c.is_running(),
            Server::Postgres(p) => p.is_running(),
        }
    }

    /// Kills the server, or one node of a cluster.
    fn kill(&mut self, node: Option<u32>) -> anyhow::Result<()> {
        match (self, node) {
            (Server::Redis(r), None) => r.kill(),
            (Server::RedisCluster(c), None) => c.kill(),
            (Server::RedisCluster(c), Some(id)) => c.node(id)?.kill(),
            (Server::Kafka(k), None) => k.kill(),
            (Server::KafkaCluster(c), None) => c.kill(),
            (Server::KafkaCluster(c), Some(id)) => c.node(id)?.kill(),
            (Server::Postgres(p), None) => p.kill(),
            (_, Some(_)) => bail!("only a cluster has nodes to name"),
        }
    }

    /// Restarts the server, or one node of a cluster.
    fn restart(&mut self, node: Option<u32>) -> anyhow::Result<()> {
        match (self, node) {
            (Server::Redis(r), None) => r.restart(),
            (Server::RedisCluster(c), None) => c.restart(),
            (Server::RedisCluster(c), Some(id)) => c.restart_node(id),
            (Server::Kafka(k), None) => k.restart(),
            (Server::KafkaCluster(c), None) => c.restart(),
            (Server::KafkaCluster(c), Some(id)) => c.node(id)?.restart(),
            (Server::Postgres(p), None) => p.restart(),
            (_, Some(_)) => bail!("only a cluster has nodes to name"),
        }
    }

    fn detach(self) {
        match self {
            Server::Redis(r) => r.detach(),
            Server::RedisCluster(c) => c.detach(),
            Server::Kafka(k) => k.detach(),
            Server::KafkaCluster(c) => c.detach(),
            Server::Postgres(p) => p.detach(),
        }
    }

    fn shut_down(self) -> anyhow::Result<()> {
        match self {
            Server::Redis(r) => r.shut_down(),
            Server::RedisCluster(c) => c.shut_down(),
            Server::Kafka(k) => k.shut_down(),
            Server::KafkaCluster(c) => c.shut_down(),
            Server::Postgres(p) => p.shut_down(),
        }
    }
}

fn up(wanted: &[Service]) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let mut env = Vec::new();
    // Until every server is up, these handles stop what this call started if a later one
    // fails: `up` starts all it was asked for, or nothing.
    let mut started = Vec::new();
    for &service in wanted {
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

/// Stops the recorded servers of `services` (none: every recorded one).
fn down(services: &[Service]) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let chosen: Vec<String> = state
        .services
        .keys()
        .filter(|name| services.is_empty() || services.iter().any(|s| s.name() == *name))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let what: Vec<&str> = services.iter().map(|s| s.name()).collect();
        eprintln!(
            "xtask: no {} recorded in {}; nothing to stop",
            if what.is_empty() {
                "services".to_string()
            } else {
                what.join(" or ")
            },
            state_path().display()
        );
        return Ok(());
    }
    let mut failures = Vec::new();
    for name in chosen {
        let Some(record) = state.services.remove(&name) else {
            continue;
        };
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

fn kill(service: Service, node: Option<u32>) -> anyhow::Result<()> {
    let mut server = recorded(service)?;
    server.kill(node)?;
    let (what, again) = match node {
        Some(id) => (format!("node {id} of the "), format!(" {id}")),
        None => (String::new(), String::new()),
    };
    eprintln!(
        "xtask: killed {what}{}; its data stays: `cargo xtask services restart {}{again}`",
        server.describe(),
        service.name()
    );
    Ok(())
}

fn restart(service: Service, node: Option<u32>) -> anyhow::Result<()> {
    let mut state = State::load()?;
    let mut server = recorded(service)?;
    server.restart(node)?;
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
    let mut env = env.to_vec();
    unique_names(&mut env);
    for (name, value) in &env {
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
            assert!(message.contains("usage:"), "{message}");
        }
        assert!(
            run(&["up", "mysql"])
                .unwrap_err()
                .to_string()
                .contains("unknown service")
        );
        assert!(run(&["kill", "kafka-cluster", "4"]).is_err());
        assert!(
            run(&["kill", "redis-cluster", "7"])
                .unwrap_err()
                .to_string()
                .contains("1 to 6")
        );
        assert!(
            run(&["restart", "redis", "1"])
                .unwrap_err()
                .to_string()
                .contains("single server")
        );
        assert_eq!(node_id(Service::RedisCluster, "6").unwrap(), 6);
        assert_eq!(node_id(Service::KafkaCluster, "3").unwrap(), 3);
        assert!(node_id(Service::RedisCluster, "0").is_err());
    }

    #[test]
    fn redis_cluster_is_redis_with_cluster() {
        assert_eq!(
            wanted(&["redis", "--cluster"]).unwrap(),
            [Service::RedisCluster]
        );
        assert_eq!(wanted(&["redis-cluster"]).unwrap(), [Service::RedisCluster]);
        // `down` with no name stops everything recorded, not the default set.
        assert!(named(&[]).unwrap().is_empty());
        assert_eq!(
            named(&["redis", "--cluster"]).unwrap(),
            [Service::RedisCluster]
        );
        assert_eq!(
            wanted(&["redis", "redis", "--cluster", "kafka"]).unwrap(),
            [Service::Redis, Service::RedisCluster, Service::Kafka]
        );
        assert_eq!(
            wanted(&["redis", "--cluster", "redis-cluster"]).unwrap(),
            [Service::RedisCluster]
        );
        for bad in [
            &["kafka", "--cluster"][..],
            &["kafka-cluster", "--cluster"],
            &["--cluster"],
            &["redis", "--cluster", "--brokers", "3"],
        ] {
            assert!(wanted(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn brokers_choose_the_single_broker_or_the_cluster() {
        assert_eq!(wanted(&[]).unwrap(), Service::DEFAULT);
        assert_eq!(
            wanted(&["kafka", "--brokers", "3", "redis"]).unwrap(),
            [Service::KafkaCluster, Service::Redis]
        );
        assert_eq!(
            wanted(&["kafka", "--brokers", "1"]).unwrap(),
            [Service::Kafka]
        );
        assert_eq!(wanted(&["kafka-cluster"]).unwrap(), [Service::KafkaCluster]);
        assert_eq!(wanted(&["postgres"]).unwrap(), [Service::Postgres]);
        for bad in [
            &["kafka", "--brokers", "2"][..],
            &["kafka", "--brokers"],
            &["redis", "--brokers", "3"],
        ] {
            assert!(wanted(bad).is_err(), "{bad:?}");
        }
    }
}
