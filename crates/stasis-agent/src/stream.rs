//! Event streams (`/v1/events/stream`) served asynchronously, with a cap.
//!
//! One **follower thread** per agent follows the store's event log
//! ([`stasis_cluster::EventLog::follow`], which blocks) and publishes every event on a
//! `tokio::sync::broadcast` channel. Each stream is a tokio task, not a thread: it subscribes
//! to the channel first, then reads its backlog (`since(seq)`, on the bounded blocking pool),
//! then forwards what the channel brings, dropping what it already sent by sequence number. A
//! hole in the sequence (an event committed between the backlog and the subscription can only
//! come through the channel, so a hole means the stream lagged behind the channel's capacity)
//! is filled by reading the log again, so no event is lost or repeated. A stream ends when its
//! client goes or the agent stops.
//!
//! At most [`crate::auth::ApiOptions::max_streams`] streams run at once (default 1,024,
//! `--max-streams`); the next one is refused with 429 until one ends. The agent's thread count
//! does not grow with the number of streams.

use stasis_cluster::{Event, EventLog, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Events buffered per subscriber before it counts as lagging (it then re-reads the log).
const CHANNEL: usize = 1024;

/// The agent's event streams.
pub struct Streams {
    log: EventLog<dyn Store>,
    tx: broadcast::Sender<Event>,
    permits: Arc<Semaphore>,
    max: usize,
    follower: Once,
    stop_flag: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
}

/// Too many streams.
#[derive(Debug, thiserror::Error)]
#[error("too many event streams open ({max}, see stasis agent --max-streams): retry later")]
pub struct TooMany {
    /// The cap.
    pub max: usize,
}

impl Streams {
    /// Streams of `log`, at most `max` at once.
    pub fn new(log: EventLog<dyn Store>, max: usize) -> Streams {
        let (tx, _) = broadcast::channel(CHANNEL);
        let (stop, _) = watch::channel(false);
        Streams {
            log,
            tx,
            permits: Arc::new(Semaphore::new(max)),
            max,
            follower: Once::new(),
            stop_flag: Arc::new(AtomicBool::new(false)),
            stop,
        }
    }

    /// End every stream and the follower thread (the agent is stopping).
    pub fn stop(&self) {
        self.stop_flag.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn start_follower(&self) {
        self.follower.call_once(|| {
            let log = self.log.clone();
            let tx = self.tx.clone();
            let stop = self.stop_flag.clone();
            let spawned = std::thread::Builder::new()
                .name("event-follower".into())
                .spawn(move || follow(log, tx, stop));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the event follower thread");
            }
        });
    }

    /// A new stream of every event after `since`, as a channel the caller turns into SSE.
    pub fn subscribe(&self, since: u64) -> Result<mpsc::Receiver<Event>, TooMany> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooMany { max: self.max })?;
        self.start_follower();
        let rx = self.tx.subscribe();
        let (out, out_rx) = mpsc::channel(64);
        let task = Task {
            log: self.log.clone(),
            last: since,
            out,
            _permit: permit,
        };
        tokio::spawn(task.run(rx, self.stop.subscribe()));
        Ok(out_rx)
    }
}

/// The follower thread: the log's events onto the channel, until the agent stops.
fn follow(log: EventLog<dyn Store>, tx: broadcast::Sender<Event>, stop: Arc<AtomicBool>) {
    let mut last = log.last_seq().unwrap_or(0);
    let mut follow = None;
    while !stop.load(Ordering::SeqCst) {
        let f = match follow.as_mut() {
            Some(f) => f,
            None => match log.follow(last) {
                Ok(f) => follow.insert(f),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the event log; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            },
        };
        match f.next_timeout(Duration::from_millis(500)) {
            Ok(Some(e)) => {
                last = e.seq;
                // No subscriber is fine: streams read their backlog from the log.
                let _ = tx.send(e);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "event follow broke; resuming");
                follow = None;
            }
        }
    }
}

/// One stream.
struct Task {
    log: EventLog<dyn Store>,
    last: u64,
    out: mpsc::Sender<Event>,
    _permit: OwnedSemaphorePermit,
}

impl Task {
    /// Send every event after `self.last` read from the log; false if the stream is over.
    async fn catch_up(&mut self) -> bool {
        let log = self.log.clone();
        let since = self.last;
        let events = match tokio::task::spawn_blocking(move || log.since(since)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the event log for a stream");
                return false;
            }
            Err(_) => return false,
        };
        for e in events {
            if e.seq <= self.last {
                continue;
            }
            self.last = e.seq;
            if self.out.send(e).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn run(mut self, mut rx: broadcast::Receiver<Event>, mut stop: watch::Receiver<bool>) {
        if *stop.borrow() || !self.catch_up().await {
            return;
        }
        loop {
            let got = tokio::select! {
                _ = self.out.closed() => return,
                _ = stop.changed() => return,
                r = rx.recv() => r,
            };
            match got {
                Ok(e) if e.seq <= self.last => {}
                Ok(e) if e.seq == self.last + 1 => {
                    self.last = e.seq;
                    if self.out.send(e).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !self.catch_up().await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
