//! Job events: what happened to each message, published to `{ns}.events` and kept by its
//! stream queue, so a job's history can be rebuilt from the broker alone.
//!
//! Events are batched: one AMQP message carries the events of up to 100 ms (or 1,024 events), so
//! under load they cost the broker a small fraction of a publish per step message. Events are
//! observability, not the job's data: they may lag the job by that much, and a worker killed
//! with SIGKILL loses those of its last 100 ms (a graceful stop flushes them).

mod event;
mod operator;
mod read;
mod sink;
mod wire;

pub use event::*;
pub use operator::*;
pub use read::*;
pub use sink::*;
pub use wire::*;

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_dated_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::format_time(951_825_600_000), "2000-02-29 12:00:00");
    }

    use uuid::Uuid;

    use super::{sink::coalesce, wire::VersionOnly, *};

    fn event(kind: EventKind, message_id: Uuid, attempt: u32) -> JobEvent {
        JobEvent {
            at_ms: 1_000,
            duration_ms: (kind == EventKind::Succeeded).then_some(40),
            ..JobEvent::new(kind, Uuid::nil(), message_id, "p".into(), "s".into(), "w".into(), attempt)
        }
    }

    fn succeeded(pipeline: &str, at_ms: u64) -> JobEvent {
        JobEvent {
            at_ms,
            duration_ms: Some(3),
            outputs: 1,
            ..JobEvent::new(
                EventKind::Succeeded,
                Uuid::now_v7(),
                Uuid::now_v7(),
                pipeline.into(),
                "features".into(),
                "features@host-7#4242".into(),
                1,
            )
        }
    }

    #[test]
    fn a_batch_reads_back_as_written_with_every_field_and_a_stray_pipeline() {
        let mut events: Vec<JobEvent> = (0..5).map(|i| succeeded("iris", 1_795_000_000_000 + i)).collect();
        events.push(succeeded("wine", 1_795_000_000_009));
        events.push(JobEvent {
            delivery_count: 2,
            delay_ms: Some(400),
            error: Some("boom".into()),
            error_kind: Some("permanent".into()),
            last_step: true,
            detail: Some(rmpv::Value::from("x")),
            step: "other".into(),
            worker: "other@h#1".into(),
            attempt: 3,
            ..succeeded("iris", 1_795_000_000_001)
        });
        let batch = EventBatch { mark: Some(Uuid::now_v7()), ..EventBatch::new(events.clone()) };
        let back = EventBatch::decode(&batch.encode().expect("encode")).expect("decode");
        assert_eq!(back, batch);
    }

    #[test]
    fn version_1_batches_still_read_and_version_2_is_a_third_of_their_size() {
        let events: Vec<JobEvent> = (0..200).map(|i| succeeded("iris", 1_795_000_000_000 + i)).collect();
        let v1 = rmp_serde::to_vec_named(&EventBatch { v: 1, events: events.clone(), mark: None }).expect("v1");
        let read = EventBatch::decode(&v1).expect("a version 1 batch decodes");
        assert_eq!((read.v, read.events), (1, events.clone()));
        let v2 = EventBatch::new(events).encode().expect("v2");
        assert!(v2.len() * 100 <= v1.len() * 40, "version 2 is {} bytes against {} for version 1", v2.len(), v1.len());
        let unknown = rmp_serde::to_vec_named(&VersionOnly { v: 9 }).expect("v9");
        assert!(matches!(EventBatch::decode(&unknown), Err(EventsDecodeError::UnknownVersion(9))));
    }

    #[test]
    fn started_is_folded_into_succeeded_of_the_same_attempt_only() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut batch = vec![
            event(EventKind::Started, a, 1),
            event(EventKind::Retrying, a, 1),
            event(EventKind::Started, a, 2),
            event(EventKind::Succeeded, a, 2),
            event(EventKind::Started, b, 1),
        ];
        coalesce(&mut batch);
        let kinds: Vec<(EventKind, u32)> = batch.iter().map(|e| (e.kind, e.attempt)).collect();
        assert_eq!(
            kinds,
            vec![(EventKind::Started, 1), (EventKind::Retrying, 1), (EventKind::Succeeded, 2), (EventKind::Started, 1)]
        );
        assert_eq!(batch[2].started_at_ms(), Some(960));
    }
}
