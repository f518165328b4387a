//! A TCP proxy in front of PostgreSQL that a test can cut and restore: to keyledger behind it,
//! a cut is the database going away as in a restart (open connections closed, new ones
//! refused), and a restore is the server back on the same address.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The proxy, listening on a loopback port of its own.
#[derive(Debug)]
pub struct StoreProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// The accept loop, owning every proxied connection, while the database is "up".
    running: Mutex<Option<JoinHandle<()>>>,
}

impl StoreProxy {
    /// A proxy to the PostgreSQL server the tests use, already passing traffic.
    pub async fn start() -> Self {
        let server = crate::postgres::server_url();
        let authority = authority(&server).expect("the server URL names a host and port");
        let upstream = tokio::net::lookup_host(authority)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .expect("the server's address resolves");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Self { addr, upstream, running: Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    /// `database_url` with its server replaced by this proxy.
    #[must_use]
    pub fn url(&self, database_url: &str) -> String {
        let authority = authority(database_url).expect("a URL with a host and port");
        database_url.replacen(authority, &self.addr.to_string(), 1)
    }

    /// Takes the database away: every open connection is closed, new ones are refused.
    pub fn cut(&self) {
        if let Some(accepting) = self.lock().take() {
            accepting.abort();
        }
    }

    /// Gives the database back on the same address.
    pub async fn restore(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The old listener may take a moment to be dropped by its aborted task.
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(error) => panic!("cannot listen again on {}: {error}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let accepting = tokio::spawn(async move {
            // The connections belong to this task: aborting it drops them, and so closes them.
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.lock() = Some(accepting);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `host:port` of a `postgres://user@host:port/db` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let rest = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    Some(rest.rsplit_once('@').map_or(rest, |(_, host)| host))
}
