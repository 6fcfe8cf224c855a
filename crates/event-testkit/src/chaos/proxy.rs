//! [`TcpProxy`]: a loopback TCP proxy between the buses and a server, which can drop every
//! connection at once or stop forwarding for a while: connection faults without touching the
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy listening on a free loopback port and forwarding to one server. Stops when
/// dropped.
pub struct TcpProxy {
    port: u16,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    /// While `true`, nothing is forwarded.
    stalled: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("port", &self.port)
            .finish()
    }
}

impl TcpProxy {
    /// Starts a proxy to `target` (`host:port`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (generation, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let shared = Arc::new((generation.clone(), stalled.clone()));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (generation, stalled) = (shared.0.subscribe(), shared.1.subscribe());
                tokio::spawn(forward(client, target, generation, stalled));
            }
        });
        Ok(Self {
            port,
            generation,
            stalled,
            accept,
        })
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every open connection; new ones are forwarded as before.
    pub fn drop_connections(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards nothing, on open and new connections, for `pause`; then goes on.
    pub async fn stall(&self, pause: Duration) {
        self.set_stalled(true);
        tokio::time::sleep(pause).await;
        self.set_stalled(false);
    }

    /// Stops forwarding (`true`), on open and new connections, until called with `false`:
    /// what either side sends meanwhile waits in the proxy, and is lost if the connections are
    /// then dropped.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn forward(
    client: TcpStream,
    target: SocketAddr,
    generation: watch::Receiver<u64>,
    mut stalled: watch::Receiver<bool>,
) {
    while *stalled.borrow_and_update() {
        if stalled.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // When either direction ends, both sockets close.
    tokio::select! {
        () = pump(client_read, server_write, generation.clone(), stalled.clone()) => {}
        () = pump(server_read, client_write, generation, stalled) => {}
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut generation: watch::Receiver<u64>,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while *stalled.borrow_and_update() {
            tokio::select! {
                changed = stalled.changed() => if changed.is_err() { return },
                _ = generation.changed() => return,
            }
        }
        // Reading is cancel-safe: a read cut short by a stall or a drop loses no bytes.
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = generation.changed() => return,
            _ = stalled.changed() => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
