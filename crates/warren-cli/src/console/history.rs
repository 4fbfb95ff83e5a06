//! The console's live read model of jobs: the events stream of the last `--history-hours`
//! (default 24) folded once into a row per job ([`JobRows`]), then kept up to date as events
//! arrive, so the jobs page lists, filters and pages a million jobs from memory instead of
//! reading and folding the stream on every page. Loading reads the window once at start (ten
//! million events take some seconds); until it has caught up, pages show what it has so far and
//! say so. A broken connection reloads it from scratch. Beside it, successes and deaths per step
//! and minute for the queues page's charts.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use uuid::Uuid;
use warren::{Broker, Names, events::From};
use warren_ops::{
    digest::{JobDigest, JobRow, JobRows},
    history::{JobState, MinuteCounts, Rates},
};

/// Jobs by submission, newest first, with what the list filters on (state, pipeline); a row
/// is built only for the jobs a page shows.
type Index = BTreeMap<(Reverse<u64>, Reverse<Uuid>), (JobState, Arc<str>)>;

#[derive(Default)]
struct Inner {
    fold: JobRows,
    /// Successes and deaths per step and minute, for the queues page's charts.
    minutes: MinuteCounts,
    index: Index,
    /// Jobs changed since the index was last brought up to date, with their submission time
    /// then (where they sat in the index).
    dirty: HashMap<Uuid, Option<u64>>,
}

impl Inner {
    fn push(&mut self, e: &warren::JobEvent) {
        let before = self.fold.digest(e.job_id).map(JobDigest::submitted_ms);
        if let Some(job) = self.fold.push(e) {
            self.dirty.entry(job).or_insert(before);
        }
    }

    fn refresh(&mut self) {
        for (job, before) in std::mem::take(&mut self.dirty) {
            if let Some(at) = before {
                self.index.remove(&(Reverse(at), Reverse(job)));
            }
            if let Some(d) = self.fold.digest(job) {
                let entry = (d.job_state(), self.fold.pipeline(d));
                self.index.insert((Reverse(d.submitted_ms()), Reverse(job)), entry);
            }
        }
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        self.minutes.forget_before(warren::envelope::now_ms().saturating_sub(2 * 3_600_000));
        self.refresh();
        let gone: HashSet<Uuid> = self.fold.forget_before(cutoff_ms).into_iter().collect();
        if !gone.is_empty() {
            self.index.retain(|(_, Reverse(job)), _| !gone.contains(job));
        }
    }
}

/// The live model (see the module's documentation).
pub struct LiveJobs {
    keep_ms: u64,
    /// Marks pages wait for (see [`LiveJobs::sync`]).
    waiting: Mutex<HashMap<Uuid, tokio::sync::oneshot::Sender<()>>>,
    inner: Mutex<Inner>,
    loaded: AtomicBool,
    read: AtomicU64,
}

/// A page's view of the model.
pub struct Snapshot {
    /// The rows of jobs submitted at or after the asked time, newest first, as the filter keeps.
    pub rows: Vec<JobRow>,
    /// How many rows the filter kept in all.
    pub total: usize,
    /// Whether the model has caught up with the stream; else how many events it has read.
    pub loading: Option<u64>,
}

impl LiveJobs {
    /// A model of the last `keep_ms`, empty until [`LiveJobs::run`] loads it.
    pub fn new(keep_ms: u64) -> Arc<Self> {
        Arc::new(LiveJobs {
            keep_ms,
            waiting: Mutex::new(HashMap::new()),
            inner: Mutex::new(Inner::default()),
            loaded: AtomicBool::new(false),
            read: AtomicU64::new(0),
        })
    }

    /// Whether a window from `since_ms` is the model's to answer: it reaches that far back.
    pub fn covers(&self, since_ms: u64) -> bool {
        // It loads a minute more than it keeps, so the page of exactly its hours is its own.
        warren::envelope::now_ms().saturating_sub(self.keep_ms + 60_000) <= since_ms
    }

    /// Jobs submitted at or after `since_ms` that `keep` keeps (given a job's id, state and
    /// pipeline): the page `skip..skip + take` of them, and how many there are.
    pub fn page(
        &self,
        since_ms: u64,
        keep: impl Fn(Uuid, JobState, &str) -> bool,
        skip: usize,
        take: usize,
    ) -> Snapshot {
        let loading = (!self.loaded.load(Ordering::Acquire)).then(|| self.read.load(Ordering::Relaxed));
        let Ok(inner) = self.inner.lock() else { return Snapshot { rows: Vec::new(), total: 0, loading } };
        let mut rows = Vec::with_capacity(take);
        let mut total = 0;
        for ((_, Reverse(job)), (state, pipeline)) in inner.index.range(..=(Reverse(since_ms), Reverse(Uuid::nil()))) {
            if keep(*job, *state, pipeline) {
                if total >= skip && rows.len() < take {
                    rows.extend(inner.fold.row(*job));
                }
                total += 1;
            }
        }
        Snapshot { rows, total, loading }
    }

    /// Per step, successes and deaths in each of the last `minutes` whole minutes before
    /// `now_ms` (as [`warren_ops::history::per_minute`] over the stream), once loaded.
    pub fn per_minute(&self, now_ms: u64, minutes: usize) -> Option<Rates> {
        if !self.loaded.load(Ordering::Acquire) {
            return None;
        }
        Some(self.inner.lock().ok()?.minutes.last(now_ms, minutes))
    }

    /// When the model last heard of `job` (once loaded).
    pub fn last_event_ms(&self, job: Uuid) -> Option<u64> {
        if !self.loaded.load(Ordering::Acquire) {
            return None;
        }
        self.inner.lock().ok()?.fold.digest(job).map(JobDigest::last_ms)
    }

    /// Waits (at most `within`) until the model holds every event published before the call, as
    /// a page read from the stream would: it appends a mark and waits for the model to meet it.
    /// Returns whether it did; a model still loading returns at once.
    pub async fn sync(&self, broker: &Broker, names: &Names, within: Duration) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return false;
        }
        let mark = Uuid::now_v7();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(mark, tx);
        }
        let met = match warren::events::mark(broker, names, mark).await {
            Ok(_) => matches!(tokio::time::timeout(within, rx).await, Ok(Ok(()))),
            Err(_) => false,
        };
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&mark);
        }
        met
    }

    /// Loads the model and keeps it up to date, for good: on a broken connection it starts over.
    pub async fn run(self: Arc<Self>, broker: Broker, names: Names) {
        loop {
            if let Err(e) = self.follow(&broker, &names).await {
                tracing::warn!(error = %e, "the jobs list lost the events stream; reloading it");
            }
            self.loaded.store(false, Ordering::Release);
            tokio::time::sleep(Duration::from_secs(2)).await; // back-off before reconnecting
        }
    }

    async fn follow(&self, broker: &Broker, names: &Names) -> Result<(), warren::TopologyError> {
        let started = std::time::Instant::now();
        let from_ms = warren::envelope::now_ms().saturating_sub(self.keep_ms + 60_000);
        let mark = Uuid::now_v7();
        warren::events::mark(broker, names, mark).await?;
        // Events of a job come after it was submitted; a minute before the window covers skew.
        let mut rx =
            warren::events::follow_batches(broker, names, From::Time(from_ms.saturating_sub(60_000)), 64).await?;
        if let Ok(mut inner) = self.inner.lock() {
            *inner = Inner::default();
        }
        self.read.store(0, Ordering::Relaxed);
        let mut last_forget = std::time::Instant::now();
        while let Some(batch) = rx.recv().await {
            if batch.mark == Some(mark) {
                self.loaded.store(true, Ordering::Release);
                tracing::info!(
                    events = self.read.load(Ordering::Relaxed),
                    seconds = started.elapsed().as_secs_f64(),
                    "the jobs list has caught up with the events stream"
                );
            }
            if let Some(m) = batch.mark {
                let waiter = self.waiting.lock().ok().and_then(|mut w| w.remove(&m));
                if let Some(tx) = waiter {
                    let _ = tx.send(());
                }
            }
            let n = batch.events.len() as u64;
            let Ok(mut inner) = self.inner.lock() else { continue };
            for e in &batch.events {
                inner.minutes.push(e);
                inner.push(e);
            }
            inner.refresh();
            if last_forget.elapsed() > Duration::from_secs(60) {
                let cutoff = warren::envelope::now_ms().saturating_sub(self.keep_ms + 120_000);
                inner.forget_before(cutoff);
                last_forget = std::time::Instant::now();
            }
            drop(inner);
            self.read.fetch_add(n, Ordering::Relaxed);
        }
        Err(warren::BrokerError::Pool("the events stream closed".into()).into())
    }
}
