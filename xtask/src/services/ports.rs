//! Free loopback ports, and waiting for a server to answer on one.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::Context;

/// `count` distinct ports that were free on 127.0.0.1 a moment ago.
///
/// Each is picked by binding port 0 and reading what the kernel chose; all listeners are held
/// until every port is picked, so the ports differ, then released for the server to bind.
/// Another program may still take one in between: the servers' start-up retries on "address
/// already in use".
pub(crate) fn free_loopback_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<Result<Vec<_>, std::io::Error>>()
        .context("reading the port the kernel picked")
}

/// The loopback address of `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether a server start-up failure was the port being taken by someone else after it was
/// picked (both Redis and Kafka log the OS's words).
pub(crate) fn is_port_taken(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("Address already in use")
}

/// What one look at a starting server found.
pub(crate) enum Probe {
    /// It answers: start-up is over.
    Ready,
    /// Not yet; the text says what was seen, for the message if the deadline passes.
    NotYet(String),
}

/// Calls `probe` every `interval` until it reports [`Probe::Ready`], fails, or `timeout` has
/// passed since the first call. Returns how long it took.
///
/// # Errors
/// The first error `probe` returns (a server that exited, say), or a timeout naming the last
/// thing seen.
pub(crate) fn wait_until_ready(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Probe>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let last = match probe()? {
            Probe::Ready => return Ok(started.elapsed()),
            Probe::NotYet(seen) => seen,
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what} did not answer within {}s (last try: {last})",
                timeout.as_secs()
            );
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Whether a picked port is still free a moment later depends on every other program on
    // the machine (any outgoing connection may take it), so that is not asserted here.
    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let ports = free_loopback_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p != 0));
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        assert_eq!(
            loopback(ports[0]).to_string(),
            format!("127.0.0.1:{}", ports[0])
        );
    }

    #[test]
    fn waiting_stops_at_ready_at_an_error_and_at_the_deadline() {
        let mut calls = 0;
        wait_until_ready("s", Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            Ok(if calls < 3 {
                Probe::NotYet("no".into())
            } else {
                Probe::Ready
            })
        })
        .unwrap();
        assert_eq!(calls, 3);

        let failed = wait_until_ready("s", Duration::from_secs(5), Duration::ZERO, || {
            anyhow::bail!("exited")
        });
        assert!(failed.unwrap_err().to_string().contains("exited"));

        let late = wait_until_ready("srv", Duration::ZERO, Duration::ZERO, || {
            Ok(Probe::NotYet("connection refused".into()))
        });
        let message = late.unwrap_err().to_string();
        assert!(message.contains("srv did not answer") && message.contains("connection refused"));
    }

    #[test]
    fn port_conflicts_are_recognised_through_context() {
        let error = anyhow::anyhow!("bind: Address already in use").context("redis exited");
        assert!(is_port_taken(&error));
        assert!(!is_port_taken(&anyhow::anyhow!("permission denied")));
    }
}
