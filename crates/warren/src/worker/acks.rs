//! Acks batched with `multiple` where the semantics allow it.
//!
//! Each basic.ack on a quorum queue is a command the broker appends to the queue's Raft log; one
//! ack with `multiple` settles every delivery up to its tag in one command. But `multiple` also
//! settles deliveries still being handled, or deliberately left unacked (the broker redelivers
//! them), so it may only cover tags below the lowest delivery not yet finished.
//!
//! The consumer loop reports each delivery as it starts ([`AckBatcher::started`]) and the handler
//! as it finishes ([`AckBatcher::ack`]); one task per consumer channel takes whatever has
//! finished since it last ran, acks everything below the lowest unfinished tag with a single
//! `multiple` ack and the rest one by one. Nothing waits for company: a lone ack goes out at
//! once, and under load the acks that pile up while one is on the wire go out as one.

use std::collections::BTreeSet;

use lapin::{Acker, options::BasicAckOptions};
use tokio::sync::{mpsc, oneshot};

enum Report {
    Started(u64),
    Finished(u64, Acker),
    Flush(oneshot::Sender<()>),
}

/// The ack side of one consumer channel. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct AckBatcher {
    tx: mpsc::UnboundedSender<Report>,
}

impl AckBatcher {
    /// Starts the task acking on behalf of one consumer channel. It ends when every clone is
    /// dropped.
    pub(super) fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Self { tx }
    }

    /// Delivery `tag` was received and will be acked or deliberately left unacked.
    pub(super) fn started(&self, tag: u64) {
        let _ = self.tx.send(Report::Started(tag));
    }

    /// Delivery `tag` is done with: ack it (perhaps together with others).
    pub(super) fn ack(&self, tag: u64, acker: &Acker) {
        let _ = self.tx.send(Report::Finished(tag, acker.clone()));
    }

    /// Waits until every ack reported before this call has been sent.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Report::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Report>) {
    let mut plan = Plan::default();
    let mut reports = Vec::with_capacity(256);
    let mut flushes = Vec::new();
    while rx.recv_many(&mut reports, 1024).await > 0 {
        let mut finished = Vec::new();
        for report in reports.drain(..) {
            match report {
                Report::Started(tag) => plan.started(tag),
                Report::Finished(tag, acker) => finished.push((tag, acker)),
                Report::Flush(done) => flushes.push(done),
            }
        }
        let tags: Vec<u64> = finished.iter().map(|(t, _)| *t).collect();
        let (multiple, single) = plan.finished(&tags);
        for (tag, acker) in &finished {
            let options = if Some(*tag) == multiple {
                BasicAckOptions { multiple: true }
            } else if single.contains(tag) {
                BasicAckOptions { multiple: false }
            } else {
                continue;
            };
            // A failed ack means the channel is gone: the broker redelivers, dedup and
            // idempotent handlers absorb it, as with any unacked delivery.
            let _ = acker.ack(options).await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Which acks to send, as pure bookkeeping of started and finished tags.
#[derive(Debug, Default)]
struct Plan {
    /// Delivered and not finished: a `multiple` ack must stay below the lowest of them.
    open: BTreeSet<u64>,
}

impl Plan {
    fn started(&mut self, tag: u64) {
        self.open.insert(tag);
    }

    /// Marks `tags` finished and returns the tag to ack with `multiple` (covering every
    /// finished tag below the lowest open one) and the tags to ack one by one.
    fn finished(&mut self, tags: &[u64]) -> (Option<u64>, Vec<u64>) {
        for t in tags {
            self.open.remove(t);
        }
        let floor = self.open.first().copied().unwrap_or(u64::MAX);
        let below: Vec<u64> = tags.iter().copied().filter(|t| *t < floor).collect();
        let multiple = if below.len() > 1 { below.iter().copied().max() } else { None };
        let single = tags.iter().copied().filter(|t| multiple.is_none() || *t >= floor).collect();
        (multiple, single)
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    fn plan(started: impl IntoIterator<Item = u64>) -> Plan {
        let mut p = Plan::default();
        for t in started {
            p.started(t);
        }
        p
    }

    #[test]
    fn finished_tags_below_every_open_one_go_as_one_multiple_ack() {
        let mut p = plan(1..=5);
        assert_eq!(p.finished(&[2, 1, 3]), (Some(3), vec![]));
        assert_eq!(p.finished(&[4, 5]), (Some(5), vec![]));
    }

    #[test]
    fn a_multiple_ack_never_covers_an_open_delivery() {
        let mut p = plan(1..=6);
        // 3 is still being handled (or deliberately left unacked): 4 and 6 go one by one.
        assert_eq!(p.finished(&[1, 2, 4, 6]), (Some(2), vec![4, 6]));
        // 5 finishes: 3 is still open, so 5 alone.
        assert_eq!(p.finished(&[5]), (None, vec![5]));
        // 3 finishes: nothing open below it, a single tag needs no `multiple`.
        assert_eq!(p.finished(&[3]), (None, vec![3]));
    }

    #[test]
    fn a_lone_ack_goes_out_alone() {
        let mut p = plan([7]);
        assert_eq!(p.finished(&[7]), (None, vec![7]));
    }
}
