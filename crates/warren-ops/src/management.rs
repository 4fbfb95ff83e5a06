//! RabbitMQ's management API, for what AMQP does not tell: the unacked count of each queue.
//!
//! Asked at the broker's host, port 15672, with the AMQP URL's credentials (RabbitMQ's
//! convention; the user needs the `monitoring` tag), over plain HTTP for an `amqp://` broker.
//! Everything here answers `None` rather than fail: callers show an unknown count.

use std::collections::BTreeMap;

/// The management API's request for the queues of the first broker URL's vhost: host and port,
/// and the HTTP/1.0 request (credentials as basic auth). None for `amqps://` (the API would be
/// HTTPS) or a URL that does not parse.
pub fn request(amqp_url: &str) -> Option<(String, String)> {
    use base64::Engine;
    let uri: lapin::uri::AMQPUri = amqp_url.parse().ok()?;
    if uri.scheme != lapin::uri::AMQPScheme::AMQP {
        return None;
    }
    let host = format!("{}:15672", uri.authority.host);
    let user = &uri.authority.userinfo;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.username, user.password));
    let vhost: String = uri
        .vhost
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let request = format!(
        "GET /api/queues/{vhost}?columns=name,messages_unacknowledged HTTP/1.0\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\r\n"
    );
    Some((host, request))
}

/// Reads a management API answer: `name` → `messages_unacknowledged` of each queue, if the status
/// is 200 and the body is the API's array.
pub fn parse_unacked(response: &[u8]) -> Option<BTreeMap<String, u64>> {
    let text = std::str::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head.lines().next()?.split_whitespace().nth(1)? != "200" {
        return None;
    }
    let queues: Vec<serde_json::Value> = serde_json::from_str(body).ok()?;
    Some(
        queues
            .iter()
            .filter_map(|q| Some((q["name"].as_str()?.to_owned(), q["messages_unacknowledged"].as_u64().unwrap_or(0))))
            .collect(),
    )
}

/// The unacked count of every queue of the vhost of `amqp_url`, from the management API (3 s at
/// most); None when it does not answer, refuses or answers something else.
pub async fn unacked(amqp_url: &str) -> Option<BTreeMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, get) = request(amqp_url)?;
    let call = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.ok()?;
        stream.write_all(get.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        parse_unacked(&response)
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), call).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_request_goes_to_the_brokers_host_with_its_credentials_and_vhost() {
        let (host, get) = request("amqp://warren-operator:s3cret@rabbitmq:5672/warren").expect("request");
        assert_eq!(host, "rabbitmq:15672");
        assert!(get.starts_with("GET /api/queues/warren?columns=name,messages_unacknowledged HTTP/1.0\r\n"));
        // base64("warren-operator:s3cret")
        assert!(get.contains("Authorization: Basic d2FycmVuLW9wZXJhdG9yOnMzY3JldA==\r\n"), "{get}");
        let (_, default_vhost) = request("amqp://guest:guest@127.0.0.1:5672/%2f").expect("request");
        assert!(default_vhost.starts_with("GET /api/queues/%2F?"), "{default_vhost}");
        assert!(request("amqps://u:p@host:5671/v").is_none(), "TLS brokers are not asked over plain HTTP");
    }

    #[test]
    fn a_management_answer_reads_as_unacked_counts_and_anything_else_as_none() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[{\"name\":\"warren.step.train\",\"messages_unacknowledged\":3},{\"name\":\"warren.step.tune\"}]";
        let counts = parse_unacked(ok).expect("counts");
        assert_eq!(counts.get("warren.step.train"), Some(&3));
        assert_eq!(counts.get("warren.step.tune"), Some(&0));
        assert!(parse_unacked(b"HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":\"not_authorised\"}").is_none());
        assert!(parse_unacked(b"garbage").is_none());
    }
}
