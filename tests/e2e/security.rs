//! Security: `amqps://` is TLS for real, against a RabbitMQ node of the test's own with a TLS
//! listener and certificates the test makes; a plain connection to the TLS port fails clearly.

use std::{path::Path, time::Duration};

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, QueueDeclareOptions},
    types::FieldTable,
};
use warren::{Broker, Config};
use warren_e2e::chaos::{Node, node::free_port};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority and a server certificate for localhost and 127.0.0.1.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=warren-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn config(url: &str, ca: Option<&Path>) -> Config {
    let mut env =
        vec![("WARREN_AMQP_URL".to_owned(), url.to_owned()), ("WARREN_NAMESPACE".to_owned(), "t-tls".to_owned())];
    if let Some(ca) = ca {
        env.push(("WARREN_TLS_CA_FILE".to_owned(), ca.display().to_string()));
    }
    Config::load_from(None, env, &[]).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_is_tls_for_real_and_plain_amqp_to_the_tls_port_fails_clearly() {
    let root = std::env::temp_dir().join(format!("warren-tls-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).expect("cert dir");
    make_certificates(&certs);
    let tls_port = free_port().expect("a free port");
    let d = |f: &str| certs.join(f).display().to_string();
    let extra = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n",
        d("ca.pem"),
        d("server.pem"),
        d("server.key")
    );
    let node = Node::start_with(&root, &format!("wtls{}", std::process::id()), 0, &extra).await.unwrap_or_else(|e| {
        panic!("cannot start a RabbitMQ node with a TLS listener (run as root, with rabbitmq-server installed): {e}")
    });

    let ca = certs.join("ca.pem");
    // On a task of its own, so a failed assertion still lets the node below be stopped.
    let outcome = tokio::spawn(async move {
        // A round trip over TLS: declare, publish with a confirm, read it back.
        let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
        let broker = Broker::connect(&config(&url, Some(&ca)), "tls-test").await.expect("TLS connect");
        let ch = broker.channel().await.expect("channel");
        ch.queue_declare("t-tls.q".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("declare");
        broker
            .publisher()
            .await
            .expect("publisher")
            .publish("", "t-tls.q", b"over tls", BasicProperties::default())
            .await
            .expect("confirmed publish");
        let got =
            ch.basic_get("t-tls.q".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
        assert_eq!(got.delivery.data, b"over tls");
        broker.close().await;

        // Without the test's CA the server's certificate is refused: TLS checks for real.
        let err = Broker::connect(&config(&url, None), "tls-test").await.expect_err("an unknown CA must be refused");
        let text = err.to_string();
        assert!(text.contains("amqps://guest:***@localhost") && text.contains("tls_ca_file"), "{text}");
        assert!(!text.contains("guest:guest"), "no password in errors: {text}");

        // Plain AMQP to the TLS port fails, quickly and naming the URL.
        let plain = format!("amqp://guest:guest@127.0.0.1:{tls_port}/%2f");
        let started = std::time::Instant::now();
        let err = Broker::connect(&config(&plain, None), "tls-test").await.expect_err("plain AMQP to a TLS port");
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{tls_port}")) && text.contains("cannot connect"), "{text}");
        assert!(text.contains("use amqps://"), "says what to do: {text}");
    });
    let result = tokio::time::timeout(Duration::from_secs(120), outcome).await;
    node.shutdown().await;
    if let Ok(Err(e)) = &result
        && e.is_panic()
    {
        let _ = std::fs::remove_dir_all(&root);
        panic!("the TLS checks failed (see above); the node was stopped");
    }
    let _ = std::fs::remove_dir_all(&root);
    let joined = result.expect("the TLS checks finished within 2 minutes");
    joined.expect("the TLS checks ran");
}
