//! `warren traces` against a real OTLP/HTTP receiver started by the test: a job arrives as one
//! trace, with a span per step execution carrying the job, step and outcome, its trials under
//! tune and each retried attempt a span of its own.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value,
    trace::v1::{Span, status::StatusCode},
};
use prost::Message;
use warren_e2e::Behaviour;

use crate::{
    helpers::{TestNs, hop, wait_for},
    ml::warren_bin,
};

/// What the receiver got: (service.name, span).
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered as the OTLP specification says (200, an empty response).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut got = keep.lock().expect("receiver lock");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        got.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                    }
                }
                (axum::http::StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn text(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reaches_an_otlp_receiver_as_one_trace_with_trials_under_tune() {
    let mut t = TestNs::new("traces").await;
    let (endpoint, got) = receiver().await;
    let _tune = t.spawn_worker("tune", &[]);
    let _train = t.spawn_worker("train", &[]);
    t.wait_consumers("tune", 1).await;
    t.wait_consumers("train", 1).await;
    let mut exporter = tokio::process::Command::new(warren_bin())
        .args(["traces", "--otlp-endpoint", &endpoint, "--since", "1m"])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warren traces");

    // tune fans out three trials; each trial fails once and succeeds on its second attempt.
    let slip = [
        hop("tune", &Behaviour { fan_out: 3, ..Default::default() }),
        hop("train", &Behaviour { fail_times: 1, ..Default::default() }),
    ];
    let job = t.submit(&slip, [1]).await[0];
    let trace_id = job.as_bytes().to_vec();
    let spans = wait_for("the job's trace with its root span", Duration::from_secs(60), || async {
        let got = got.lock().ok()?;
        let mine: Vec<(String, Span)> = got.iter().filter(|(_, s)| s.trace_id == trace_id).cloned().collect();
        mine.iter().any(|(_, s)| s.parent_span_id.is_empty()).then_some(mine)
    })
    .await;

    let root = spans.iter().map(|(_, s)| s).find(|s| s.parent_span_id.is_empty()).expect("a root span");
    assert_eq!(text(root, "warren.state").as_deref(), Some("done"), "{root:?}");
    let steps: Vec<&(String, Span)> = spans.iter().filter(|(_, s)| !s.parent_span_id.is_empty()).collect();
    for (service, s) in &steps {
        assert_eq!(text(s, "warren.job"), Some(job.to_string()), "every span names the job: {s:?}");
        let step = text(s, "warren.step").expect("the step");
        assert_eq!(service, &format!("warren-{step}"), "each step shows as a service of its own");
        assert!(text(s, "warren.outcome").is_some(), "every span says its outcome: {s:?}");
    }
    let of = |step: &'static str| {
        steps.iter().map(|(_, s)| s).filter(move |s| text(s, "warren.step").as_deref() == Some(step))
    };
    let tune: Vec<&Span> = of("tune").collect();
    assert_eq!(tune.len(), 1, "one tune execution");
    assert_eq!(tune[0].parent_span_id, root.span_id, "tune hangs under the job");
    let train: Vec<&Span> = of("train").collect();
    assert_eq!(train.len(), 6, "three trials, each tried twice: a span per execution");
    assert!(train.iter().all(|s| s.parent_span_id == tune[0].span_id), "trials under tune");
    let retried = train.iter().filter(|s| text(s, "warren.outcome").as_deref() == Some("retrying")).count();
    assert_eq!(retried, 3, "each trial's first attempt failed");
    assert!(
        train
            .iter()
            .filter(|s| text(s, "warren.outcome").as_deref() == Some("retrying"))
            .all(|s| s.status.as_ref().is_some_and(|st| st.code == StatusCode::Error as i32)),
        "a failed attempt's span is an error"
    );
    let ids: std::collections::HashSet<&Vec<u8>> = spans.iter().map(|(_, s)| &s.span_id).collect();
    assert_eq!(ids.len(), spans.len(), "each span exported once");
    let _ = exporter.start_kill();
    let _ = exporter.wait().await;
    t.cleanup().await;
}
