//! A TCP proxy on 127.0.0.1 that can stop forwarding without closing anything: a network
//! partition as the two ends see it. Bytes stop arriving, no FIN or RST comes, and each end
//! finds out only when its heartbeats go unanswered. Healing lets bytes through again; by then
//! both ends have usually given the connection up, so what was held back meets a closed socket.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
};

use super::ChaosError;

/// A proxy from a port of its own to `127.0.0.1:{upstream}`.
#[derive(Debug)]
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port and forwards every connection to `upstream`.
    pub async fn start(upstream: u16) -> Result<Proxy, ChaosError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.map_err(|e| ChaosError(format!("proxy: cannot listen: {e}")))?;
        let port = listener.local_addr().map_err(|e| ChaosError(format!("proxy: {e}")))?.port();
        let (cut, open) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let open = open.clone();
                tokio::spawn(forward(client, upstream, open));
            }
        });
        Ok(Proxy { port, cut, task })
    }

    /// Stops forwarding: nothing passes either way, on existing or new connections, and nothing
    /// is closed.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits while the link is cut.
async fn passable(link: &mut watch::Receiver<bool>) {
    while *link.borrow_and_update() {
        if link.changed().await.is_err() {
            return;
        }
    }
}

async fn forward(client: TcpStream, upstream: u16, mut link: watch::Receiver<bool>) {
    // A connection made during the cut hangs as its SYN would: it reaches the broker only once
    // healed (and the client's connect timeout has usually given up by then).
    passable(&mut link).await;
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(("127.0.0.1", upstream))).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, link.clone()));
    pump(server_read, client_write, link).await;
    let _ = up.await;
}

/// Copies bytes one way; while the link is cut, holds what it has and reads nothing more.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        passable(&mut link).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read just as the cut began: held back like the rest.
        passable(&mut link).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
