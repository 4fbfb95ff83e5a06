//! `warren traces`: follows the events stream, folds it into spans ([`warren_ops::traces`]: one
//! trace per job, a span per step execution, trials under tune, operator actions, replays and
//! reruns linked) and exports them over OTLP/HTTP (protobuf) to a collector, Jaeger or Tempo.
//! Workers pay nothing for it: they publish their events as they always do.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status},
};
use prost::Message;
use warren::{
    Config,
    events::{From as Start, subscribe_from},
};
use warren_ops::traces::{Span as Built, Tracer, Value};

use crate::{Fail, Outcome, parse_age};

/// `warren traces`.
#[derive(Debug, clap::Args)]
pub struct TracesArgs {
    /// Where to send spans: an OTLP/HTTP endpoint (spans go to its `/v1/traces`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", default_value = "http://localhost:4318", value_name = "URL")]
    otlp_endpoint: String,
    /// Start with the events of this long ago (`0s`: from now on).
    #[arg(long, default_value = "0s", value_name = "AGE")]
    since: String,
}

/// Spans per export request.
const BATCH: usize = 512;
/// Spans kept while the endpoint does not take them; the oldest go beyond it.
const BACKLOG: usize = 100_000;

/// Where an OTLP/HTTP endpoint's traces go: `(host:port, path)`; plain `http://` only.
fn target(endpoint: &str) -> Result<(String, String), Fail> {
    let uri: hyper::Uri =
        endpoint.parse().map_err(|e| Fail::usage(format!("--otlp-endpoint {endpoint}: not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Fail::usage(format!(
            "--otlp-endpoint {endpoint}: only http:// endpoints (a collector or agent next to `warren traces`, which \
             forwards over TLS if it must)"
        )));
    }
    let host = uri.host().ok_or_else(|| Fail::usage(format!("--otlp-endpoint {endpoint}: no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = format!("{}/v1/traces", uri.path().trim_end_matches('/'));
    Ok((format!("{host}:{port}"), path))
}

/// `warren traces`: runs until interrupted.
pub async fn run(config: &Config, args: TracesArgs) -> Outcome {
    let (addr, path) = target(&args.otlp_endpoint)?;
    let since = parse_age(&args.since)?;
    let op = crate::connect(config).await?;
    let names = warren::Names::new(&config.namespace);
    let mut from = if since == 0 { Start::Next } else { Start::Time(warren::envelope::now_ms().saturating_sub(since)) };
    eprintln!(
        "warren traces: namespace {} -> http://{addr}{path} (one trace per job; spans once each step's attempt ends)",
        config.namespace
    );
    let mut tracer = Tracer::new();
    let mut pending: Vec<Built> = Vec::new();
    let mut exported = 0u64;
    let mut failing = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut events = subscribe_from(op.client().broker(), &names, from).await?;
        let mut last_at = warren::envelope::now_ms();
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => {
                        last_at = last_at.max(e.at_ms);
                        tracer.push(&e, warren::envelope::now_ms());
                    }
                    // The connection went: read again from a little before the last event (the
                    // fold takes events twice without handing a span out twice).
                    None => break,
                },
                _ = tick.tick() => {
                    pending.extend(tracer.ready(warren::envelope::now_ms()));
                    if pending.len() > BACKLOG {
                        let drop = pending.len() - BACKLOG;
                        tracing::warn!(dropped = drop, "the OTLP endpoint does not keep up; dropping the oldest spans");
                        pending.drain(..drop);
                    }
                    while !pending.is_empty() {
                        let n = pending.len().min(BATCH);
                        match export(&addr, &path, &config.namespace, &pending[..n]).await {
                            Ok(()) => {
                                exported += n as u64;
                                pending.drain(..n);
                                if failing {
                                    eprintln!("warren traces: the endpoint takes spans again ({exported} exported in all)");
                                    failing = false;
                                }
                            }
                            Err(e) => {
                                if !failing {
                                    eprintln!("warren traces: cannot export to http://{addr}{path}: {e}; keeping spans and trying again");
                                    failing = true;
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        if !op.client().broker().is_connected() {
            return Err(Fail { code: crate::submit::exit::BROKER, message: "lost the broker".into() });
        }
        from = Start::Time(last_at.saturating_sub(5_000));
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn attribute(key: &str, v: &Value) -> KeyValue {
    kv(
        key,
        match v {
            Value::Text(s) => any_value::Value::StringValue(s.clone()),
            Value::Int(i) => any_value::Value::IntValue(*i),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
        },
    )
}

/// Spans as one OTLP request: a resource per step (`service.name` `warren-{step}`, `warren` for
/// jobs and operator actions), so a backend shows each step as a service of its own.
pub fn request(namespace: &str, spans: &[Built]) -> ExportTraceServiceRequest {
    let mut by_service: std::collections::BTreeMap<String, Vec<Span>> = Default::default();
    for s in spans {
        let service = if s.step.is_empty() { "warren".to_owned() } else { format!("warren-{}", s.step) };
        let kind = if s.step.is_empty() { span::SpanKind::Internal } else { span::SpanKind::Consumer };
        by_service.entry(service).or_default().push(Span {
            trace_id: s.trace_id.as_bytes().to_vec(),
            span_id: s.span_id.to_be_bytes().to_vec(),
            parent_span_id: s.parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: s.start_ms * 1_000_000,
            end_time_unix_nano: s.end_ms * 1_000_000,
            attributes: s.attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
            links: s
                .links
                .iter()
                .map(|(trace, span)| span::Link {
                    trace_id: trace.as_bytes().to_vec(),
                    span_id: span.to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
            status: Some(match &s.error {
                Some(e) => Status { message: e.clone(), code: status::StatusCode::Error as i32 },
                None => Status { message: String::new(), code: status::StatusCode::Ok as i32 },
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue(service)),
                        kv("service.namespace", any_value::Value::StringValue(namespace.to_owned())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "warren".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// POSTs spans as OTLP/HTTP protobuf; the endpoint must answer 2xx.
async fn export(addr: &str, path: &str, namespace: &str, spans: &[Built]) -> Result<(), String> {
    let body = request(namespace, spans).encode_to_vec();
    let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("the endpoint answered {}", resp.status())) }
}
