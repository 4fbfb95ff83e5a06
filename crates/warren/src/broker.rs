//! One connection per process, a pool of confirm-mode publishing channels, and the publisher.
//!
//! lapin's own connection recovery is not used: [`crate::Worker`] reconnects by building a new
//! [`Broker`] (backoff with jitter, re-declare, resume).

use std::{sync::Arc, time::Duration};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
};

use crate::config::{Config, redact_url};

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No broker URL accepted a connection.
    #[error("cannot connect to RabbitMQ at {urls}: {reason}")]
    Connect {
        /// The URLs tried, passwords redacted.
        urls: String,
        /// The last error.
        reason: String,
        /// Nothing answered at any URL (refused, timed out, no route, no such host), as opposed
        /// to something answering that was not the broker as configured (TLS, a certificate).
        unreachable: bool,
    },
    /// An AMQP operation failed.
    #[error("{context}: {source}")]
    Amqp {
        /// What was being done.
        context: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// The broker could not route a mandatory message: no queue is bound for it (through the
    /// default exchange, `exchange` is empty: no queue has the routing key's name).
    #[error("unroutable: {}", unroutable(exchange, routing_key))]
    Unroutable {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// The broker refused the message (negative confirm).
    #[error("the broker nacked a message published to {exchange:?} with key {routing_key:?}")]
    Nacked {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// No publishing channel could be had from the pool.
    #[error("no publishing channel available: {0}")]
    Pool(String),
    /// The broker refused the credentials (ACCESS_REFUSED): retrying will not help until they change.
    #[error(
        "RabbitMQ at {url} refused the credentials of user {user:?} (ACCESS_REFUSED): check the user and password in the broker URL"
    )]
    AccessRefused {
        /// The URL, password redacted.
        url: String,
        /// The user name.
        user: String,
    },
}

impl BrokerError {
    /// The message itself was refused (unroutable or nacked), as opposed to the connection failing.
    pub fn is_refused(&self) -> bool {
        matches!(self, BrokerError::Unroutable { .. } | BrokerError::Nacked { .. })
    }
    /// No queue is bound for the message: a topology error, the only refusal that is the
    /// message's own. A nack or a lost confirm is the broker's trouble and worth publishing again.
    pub fn is_unroutable(&self) -> bool {
        matches!(self, BrokerError::Unroutable { .. })
    }
    /// The broker refused the credentials.
    pub fn is_access_refused(&self) -> bool {
        matches!(self, BrokerError::AccessRefused { .. })
    }
    /// No connection could be opened.
    pub fn is_connect(&self) -> bool {
        matches!(self, BrokerError::Connect { .. })
    }
    /// Nothing answered at any broker URL: start a broker or point the URL at one.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BrokerError::Connect { unreachable: true, .. })
    }
    /// Wraps lapin's error with what was being done (for `map_err`).
    pub fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| BrokerError::Amqp { context, source }
    }
}

/// The reply code the broker closed a channel or connection with, from lapin's error kind.
pub fn reply_kind(e: &lapin::Error) -> Option<&AMQPErrorKind> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.kind()),
        _ => None,
    }
}

/// The broker answered NOT_FOUND (a passive declare of a queue that does not exist).
pub fn is_not_found(e: &lapin::Error) -> bool {
    matches!(reply_kind(e), Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// The broker answered ACCESS_REFUSED (credentials, or a permission of the user).
pub fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(reply_kind(e), Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)))
}

/// Nothing answered: the connection was refused, timed out, found no route or no such host.
fn is_unreachable(e: &lapin::Error) -> bool {
    use std::io::ErrorKind as Io;
    match e.kind() {
        lapin::ErrorKind::IOError(io) => {
            matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::TimedOut
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::AddrNotAvailable
            ) || is_lookup_failure(io)
        }
        _ => false,
    }
}

/// A host name that does not resolve. The standard library gives getaddrinfo's failures no
/// error kind of their own (`Uncategorized`, unnamed on stable), so its message is what tells.
fn is_lookup_failure(io: &std::io::Error) -> bool {
    io.raw_os_error().is_none() && io.to_string().starts_with("failed to lookup address")
}

/// Why one URL gave no connection.
enum OpenError {
    /// lapin's error, by kind.
    Amqp(lapin::Error),
    /// Before lapin was asked (a certificate file, a build without TLS).
    Setup(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Amqp(e) => e.fmt(f),
            OpenError::Setup(s) => f.write_str(s),
        }
    }
}

fn unroutable(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        format!("no queue named {routing_key:?}")
    } else {
        format!("no queue bound to exchange {exchange:?} with routing key {routing_key:?}")
    }
}

/// An open connection with a pool of publishing channels.
#[derive(Clone)]
pub struct Broker {
    conn: Arc<Connection>,
    publishers: managed::Pool<ChannelManager>,
    name: String,
    blocked: tokio::sync::watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The client-provided connection name: `{ns}/{role}@{host}#{pid}`, shown in the management UI
/// and by `rabbitmqctl list_connections client_properties`.
pub fn connection_name(namespace: &str, role: &str) -> String {
    format!("{namespace}/{role}@{}#{}", hostname(), std::process::id())
}

/// This machine's host name, as far as it can be told without extra crates.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Why a URL gave no connection, said plainly: lapin's words, or for a peer that does not speak
/// AMQP at all (an HTTP port, say) what to check instead of a parser dump.
fn describe_failure(url: &str, e: &OpenError) -> String {
    match e {
        OpenError::Amqp(e) if matches!(e.kind(), lapin::ErrorKind::ParsingError(_)) && !url.starts_with("amqps://") => {
            "what answered does not speak AMQP 0-9-1: if it is a TLS port, use amqps://; an HTTP port (the \
             management API's 15672, say) is not the broker's AMQP port, usually 5672"
                .to_owned()
        }
        e => {
            let text = e.to_string();
            format!("{text}{}", tls_hint(url, &text))
        }
    }
}

/// What a TLS mismatch looks like from here, said plainly.
fn tls_hint(url: &str, error: &str) -> &'static str {
    let tls = url.starts_with("amqps://");
    if tls && (error.contains("InvalidContentType") || error.contains("corrupt message")) {
        " (no TLS answered at this address: is it the plain AMQP port? RabbitMQ's TLS port is usually 5671)"
    } else if tls && (error.contains("UnknownIssuer") || error.contains("invalid peer certificate")) {
        " (the broker's certificate is not trusted here: set tls_ca_file to the PEM of its certificate authority)"
    } else if !tls && ["failed to parse", "EOF", "reset", "closed"].iter().any(|s| error.contains(s)) {
        " (what answered was not plain AMQP: if this is a TLS port, use amqps://)"
    } else {
        ""
    }
}

/// Opens a connection: over TLS for `amqps://`, trusting `tls_ca_file` when it is set.
async fn open(url: &str, props: ConnectionProperties, config: &Config) -> Result<Connection, OpenError> {
    #[cfg(feature = "tls")]
    if let Some(ca) = config.tls_ca_file.as_ref().filter(|_| url.starts_with("amqps://")) {
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| OpenError::Setup(format!("cannot read tls_ca_file {}: {e}", ca.display())))?;
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: Some(pem) };
        let runtime = lapin::runtime::default_runtime().map_err(OpenError::Amqp)?;
        return Connection::connect_with_config(url, props, tls, runtime).await.map_err(OpenError::Amqp);
    }
    #[cfg(not(feature = "tls"))]
    if url.starts_with("amqps://") {
        return Err(OpenError::Setup(
            "this build of Warren has no TLS (cargo feature `tls`), so it refuses amqps:// URLs".to_owned(),
        ));
    }
    let _ = config;
    Connection::connect(url, props).await.map_err(OpenError::Amqp)
}

impl Broker {
    /// Connects to the first broker URL of `config` that answers, naming the connection after
    /// the namespace and `role` (a step name, `client`, `cli`).
    pub async fn connect(config: &Config, role: &str) -> Result<Self, BrokerError> {
        let name = connection_name(&config.namespace, role);
        let mut last = String::from("no broker URL configured");
        let mut refused = None;
        let mut unreachable = true;
        for url in &config.amqp_urls {
            let props = ConnectionProperties::default().with_connection_name(name.clone().into());
            match tokio::time::timeout(Duration::from_secs(10), open(url, props, config)).await {
                Ok(Ok(conn)) => {
                    let conn = Arc::new(conn);
                    let publishers = managed::Pool::builder(ChannelManager { conn: conn.clone() })
                        .max_size(16)
                        .build()
                        .map_err(|e| BrokerError::Pool(e.to_string()))?;
                    tracing::debug!(url = %redact_url(url), %name, "connected");
                    let blocked = watch_blocked(&conn);
                    return Ok(Self { conn, publishers, name, blocked });
                }
                Ok(Err(OpenError::Amqp(e))) if is_access_refused(&e) => {
                    let user = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.split_once('@'))
                        .map(|(auth, _)| auth.split(':').next().unwrap_or_default().to_owned())
                        .unwrap_or_else(|| "guest".to_owned());
                    refused = Some(BrokerError::AccessRefused { url: redact_url(url), user });
                    last = format!("{}: {e}", redact_url(url));
                    unreachable = false;
                    continue;
                }
                Ok(Err(e)) => {
                    unreachable &= matches!(&e, OpenError::Amqp(e) if is_unreachable(e));
                    last = format!("{}: {}", redact_url(url), describe_failure(url, &e));
                }
                Err(_) => last = format!("{}: timed out after 10s", redact_url(url)),
            }
            // A later URL that fails otherwise does not hide refused credentials.
            if refused.is_some() {
                unreachable = false;
            }
        }
        // Every URL that answered refused the credentials: say so, rather than "cannot connect".
        if let Some(e) = refused {
            return Err(e);
        }
        let urls = config.amqp_urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(", ");
        // One URL: the reason need not name it again.
        let reason = match config.amqp_urls.as_slice() {
            [only] => last.strip_prefix(&format!("{}: ", redact_url(only))).map(str::to_owned).unwrap_or(last),
            _ => last,
        };
        Err(BrokerError::Connect { urls, reason, unreachable })
    }

    /// The connection's client-provided name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// While the broker blocks this connection's publishes (a memory or disk alarm:
    /// `connection.blocked`), the reason it gave, e.g. "low on memory"; `None` otherwise. Every
    /// publish waits while it lasts, and so does everything behind it on the connection.
    pub fn blocked(&self) -> Option<String> {
        self.blocked.borrow().clone()
    }

    /// Changes of [`Broker::blocked`], to wait on.
    pub fn blocked_changes(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.blocked.clone()
    }

    /// Opens a new channel (for a consumer, or topology work).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.conn.create_channel().await.map_err(BrokerError::amqp("open channel"))
    }

    /// A confirm-mode publisher from the pool; it goes back to the pool when dropped.
    pub async fn publisher(&self) -> Result<PooledPublisher, BrokerError> {
        self.publishers.get().await.map_err(|e| BrokerError::Pool(e.to_string()))
    }

    /// Closes the connection (the broker requeues whatever is still unacked). Bounded: a broker
    /// that does not answer the close within 5 seconds does not keep a stopping process alive.
    pub async fn close(&self) {
        // The idle publishing channels first, each close awaited: a channel dropped while the
        // connection closes has lapin close it a second time and log a connection error.
        let idle = self.publishers.retain(|_, _| false).removed;
        self.publishers.close();
        if self.conn.status().connected() {
            let closes = idle.iter().map(|p| p.channel().close(200, "bye".into()));
            let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(closes)).await;
        }
        drop(idle);
        if self.conn.status().connected() {
            let close = self.conn.close(200, "bye".into());
            if tokio::time::timeout(Duration::from_secs(5), close).await.is_err() {
                tracing::warn!(connection = %self.name, "the broker did not confirm the close within 5 s; leaving");
            }
        }
    }
}

/// Follows the connection's `connection.blocked` / `connection.unblocked` notices (RabbitMQ's
/// resource alarms) into a watch, until the connection or every reader of the watch is gone.
fn watch_blocked(conn: &Connection) -> tokio::sync::watch::Receiver<Option<String>> {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::watch::channel(None);
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = tx.closed() => return,
            };
            match event {
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    let reason = if reason.is_empty() { "a resource alarm".to_owned() } else { reason };
                    tx.send_replace(Some(reason));
                }
                Some(lapin::Event::ConnectionUnblocked | lapin::Event::Connected) => {
                    tx.send_replace(None);
                }
                Some(_) => {}
                None => return,
            }
        }
    });
    rx
}

/// A publisher checked out of a [`Broker`]'s pool.
pub type PooledPublisher = managed::Object<ChannelManager>;

/// Creates confirm-mode channels for the publisher pool.
#[derive(Debug)]
pub struct ChannelManager {
    conn: Arc<Connection>,
}

impl managed::Manager for ChannelManager {
    type Type = Publisher;
    type Error = BrokerError;

    async fn create(&self) -> Result<Publisher, BrokerError> {
        let channel = self.conn.create_channel().await.map_err(BrokerError::amqp("open channel"))?;
        Publisher::new(channel).await
    }

    async fn recycle(&self, publisher: &mut Publisher, _: &Metrics) -> RecycleResult<BrokerError> {
        if publisher.channel.status().connected() { Ok(()) } else { Err(RecycleError::message("channel closed")) }
    }
}

/// Publishes with confirms on one channel. Many publishes may be in flight at once: each call
/// awaits only its own confirm.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Puts `channel` into confirm mode.
    pub async fn new(channel: Channel) -> Result<Self, BrokerError> {
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(BrokerError::amqp("confirm.select"))?;
        Ok(Self { channel })
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `body` as a mandatory message and waits for the broker's confirm. A returned
    /// (unroutable) or nacked message is an error, never a success.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.confirmed(exchange, routing_key, body, properties, true).await
    }

    /// Publishes without `mandatory` and waits for the confirm: for destinations that may have
    /// gone away on purpose, such as an RPC caller's direct reply-to, where a return is no error.
    pub async fn publish_optional(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.confirmed(exchange, routing_key, body, properties, false).await
    }

    async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let confirm = self.send_with(exchange, routing_key, body, properties, mandatory).await?;
        Self::check(confirm.await.map_err(BrokerError::amqp("publisher confirm"))?, exchange, routing_key)
    }

    /// Sends without waiting for the confirm; await the returned future for it. Lets a caller
    /// keep many confirms in flight from one task.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<lapin::PublisherConfirm, BrokerError> {
        self.send_with(exchange, routing_key, body, properties, true).await
    }

    async fn send_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<lapin::PublisherConfirm, BrokerError> {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory, ..BasicPublishOptions::default() },
                body,
                properties,
            )
            .await
            .map_err(BrokerError::amqp("basic.publish"))
    }

    /// Turns a confirmation into success or the matching error.
    pub fn check(confirmation: Confirmation, exchange: &str, routing_key: &str) -> Result<(), BrokerError> {
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => {
                Err(BrokerError::Unroutable { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(BrokerError::Nacked { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
            }
        }
    }
}
