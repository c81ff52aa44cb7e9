//! A guard against glommio 0.9.0 parking an executor that still has work queued.
//!
//! glommio's run loop asks `run_task_queues` whether it ran anything, and parks when it did not.
//! But `run_task_queues` also answers "nothing" when the preemption flag is already up on entry,
//! before it has looked at a single queue. The flag is up whenever the latency ring holds a
//! completion not yet consumed, and when that completion wakes no task (the preempt timer, armed
//! at the top of each loop, expiring because the thread was descheduled for longer than its
//! period; a cancelled operation's completion), the loop consumes it and goes to sleep with a
//! runnable task queue. It then sleeps until something unrelated wakes its reactor: a stall as
//! long as the next event's delay, and for ever when none comes. Found here as a test process
//! hung in `io_uring_enter` with `active_executors` holding a queue (core dump); reported and
//! fixed upstream as glommio/glommio#53, after 0.9.0, which is still the newest release.
//!
//! So every executor Sable starts holds a `KeepAwake`: a task of its own that a process-wide
//! watchdog thread wakes every period through its `Waker`. A wake from another thread writes the
//! executor's eventfd when it sleeps, so a reactor parked by mistake wakes within one period and
//! runs what is queued. A timer on the executor itself would not do: glommio arms it in the ring only while
//! its task waits, and the task is among the work left queued. The period is short while the
//! executor is busy, where a stall would be felt, and backs off while it is idle, where a wake-up
//! is only a cost.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Longest a reactor parked with work queued sleeps while its executor is busy.
pub const BUSY_PERIOD: Duration = Duration::from_millis(5);

/// Longest it sleeps once its executor has been idle for a while; the period doubles towards this
/// with each idle one.
pub const IDLE_PERIOD_MAX: Duration = Duration::from_millis(100);

/// Wakes the watchdog sends an executor whose `keep_awake` has not run since. Each one holds a
/// reference to the task until the executor's loop drains it, and glommio counts those in an
/// `i16`: an executor that turns no loop for this many periods (a shard blocked for seconds) is
/// left alone rather than overflow it.
const UNANSWERED_WAKES_MAX: u32 = 1_000;

/// An executor that spent at least 1/this of the last period running tasks counts as busy. An
/// idle shard's own periodic work (the group tick, every 100 ms) stays far below it; a shard
/// serving tens of requests a second does not.
const BUSY_RUNTIME_DIVISOR: u32 = 1_000;

const _: () = assert!(BUSY_PERIOD.as_nanos() < IDLE_PERIOD_MAX.as_nanos());
const _: () = assert!(UNANSWERED_WAKES_MAX < i16::MAX as u32 / 4);

/// What the watchdog knows of one executor's `keep_awake`.
struct Beacon {
    /// The task's waker; `None` once the task is gone.
    waker: Mutex<Option<Waker>>,
    /// The wait until the next wake, in nanoseconds, as the task last chose it.
    period_ns: AtomicU64,
    /// Wakes sent since the task last ran.
    unanswered: AtomicU32,
}

/// The watchdog thread's beacons, each with the time it is next due; `keep_awake` adds them, the
/// thread updates and prunes them.
struct Watchdog {
    beacons: Mutex<Vec<(Weak<Beacon>, Instant)>>,
    thread: std::thread::Thread,
}

/// Started by the first `keep_awake`; `None` if no thread could be started (each executor then
/// goes without, as it would on an unpatched glommio).
static WATCHDOG: OnceLock<Option<Watchdog>> = OnceLock::new();

fn watchdog() -> Option<&'static Watchdog> {
    WATCHDOG
        .get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("sable-awake".into())
                .spawn(watch);
            match spawned {
                Ok(handle) => Some(Watchdog {
                    beacons: Mutex::new(Vec::new()),
                    thread: handle.thread().clone(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread to wake executors glommio parks with work queued");
                    None
                }
            }
        })
        .as_ref()
}

/// The watchdog thread: wakes each live beacon when it is due, then sleeps until the earliest
/// next one (at most `IDLE_PERIOD_MAX`; a new beacon unparks it).
fn watch() {
    loop {
        let now = Instant::now();
        let mut next = now + IDLE_PERIOD_MAX;
        if let Some(watchdog) = WATCHDOG.get().and_then(Option::as_ref) {
            let mut beacons = watchdog.beacons.lock().expect("beacon list");
            // One pass: a beacon whose guard is gone leaves the list, the others are woken when due.
            beacons.retain_mut(|(beacon, due)| {
                let Some(beacon) = beacon.upgrade() else {
                    return false;
                };
                if *due <= now {
                    beacon.wake();
                    *due = now + Duration::from_nanos(beacon.period_ns.load(Ordering::Relaxed));
                }
                next = next.min(*due);
                true
            });
        }
        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
    }
}

impl Beacon {
    fn wake(&self) {
        if self.unanswered.load(Ordering::Relaxed) >= UNANSWERED_WAKES_MAX {
            return;
        }
        if let Some(waker) = self.waker.lock().expect("beacon waker").as_ref() {
            self.unanswered.fetch_add(1, Ordering::Relaxed);
            waker.wake_by_ref();
        }
    }
}

/// Keeps the current executor woken from outside for as long as it is held: take it at the
/// executor's start, before anything that could be left queued, and hold it for the executor's
/// life. Dropping it stops the wakes. The task cannot be what stops them: glommio did not drop it
/// when its executor ended (50 finished executors left 50 such tasks alive, each with its waker
/// still held here).
///
/// The task it starts reads (and so resets) glommio's executor statistics to tell busy from idle
/// (the time spent running tasks since its last run); nothing else in Sable reads them.
#[must_use = "the executor is kept awake only while this is held"]
pub struct KeepAwake(Option<Arc<Beacon>>);

impl Drop for KeepAwake {
    fn drop(&mut self) {
        if let Some(beacon) = &self.0 {
            beacon.waker.lock().expect("beacon waker").take();
        }
    }
}

/// Starts keeping the current executor awake (see `KeepAwake`).
pub fn keep_awake() -> KeepAwake {
    let Some(watchdog) = watchdog() else {
        return KeepAwake(None);
    };
    let beacon = Arc::new(Beacon {
        waker: Mutex::new(None),
        period_ns: AtomicU64::new(BUSY_PERIOD.as_nanos() as u64),
        unanswered: AtomicU32::new(0),
    });
    glommio::spawn_local(tend(Arc::downgrade(&beacon))).detach();
    watchdog
        .beacons
        .lock()
        .expect("beacon list")
        .push((Arc::downgrade(&beacon), Instant::now()));
    watchdog.thread.unpark();
    KeepAwake(Some(beacon))
}

/// The task the watchdog wakes: hands it its waker and the next period, until the beacon is
/// gone.
async fn tend(beacon: Weak<Beacon>) {
    let executor = glommio::executor();
    let _ = executor.executor_stats();
    let mut period = BUSY_PERIOD;
    let mut last_run = Instant::now();
    poll_fn(|cx| {
        let Some(beacon) = beacon.upgrade() else {
            return Poll::Ready(());
        };
        {
            let mut waker = beacon.waker.lock().expect("beacon waker");
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        beacon.unanswered.store(0, Ordering::Relaxed);
        let now = Instant::now();
        let running = executor.executor_stats().executor_runtime();
        let busy = running * BUSY_RUNTIME_DIVISOR >= now - last_run;
        last_run = now;
        period = next_period(period, busy);
        beacon
            .period_ns
            .store(period.as_nanos() as u64, Ordering::Relaxed);
        Poll::Pending
    })
    .await
}

/// The next wait: back to `BUSY_PERIOD` after any work, twice as long after none.
fn next_period(period: Duration, busy: bool) -> Duration {
    if busy {
        BUSY_PERIOD
    } else {
        (period * 2).min(IDLE_PERIOD_MAX)
    }
}

/// Runs `future` to completion on a new glommio executor on this thread, with `keep_awake`
/// beside it: what tests use where a shard would have its own executor.
#[cfg(test)]
pub(crate) fn run_local<F, T>(future: F) -> T
where
    F: std::future::Future<Output = T>,
{
    glommio::LocalExecutor::default().run(async {
        let _awake = keep_awake();
        future.await
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_period_backs_off_while_idle_and_snaps_back_when_busy() {
        let mut period = BUSY_PERIOD;
        let mut idle = Vec::new();
        for _ in 0..8 {
            period = next_period(period, false);
            idle.push(period);
        }
        assert!(idle.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(idle.last(), Some(&IDLE_PERIOD_MAX));
        assert_eq!(next_period(IDLE_PERIOD_MAX, true), BUSY_PERIOD);
    }

    #[test]
    fn dropping_the_guard_ends_the_wakes_though_the_task_stays_behind() {
        let beacon = run_local(async {
            let awake = keep_awake();
            glommio::timer::sleep(Duration::from_millis(1)).await;
            let beacon = awake
                .0
                .as_ref()
                .map(Arc::downgrade)
                .expect("a watchdog thread");
            let waker_set = beacon
                .upgrade()
                .is_some_and(|b| b.waker.lock().unwrap().is_some());
            assert!(waker_set, "the task handed the watchdog its waker");
            beacon
        });
        // run_local's own guard is gone too; the detached task holds only a weak reference, so
        // the watchdog drops the beacon and wakes nothing more.
        assert!(beacon.upgrade().is_none());
    }

    /// With a preempt timer shorter than the loop's own turns, glommio 0.9.0 soon parks with the
    /// main task queued and, with nothing else to wake it, never returns (glommio/glommio#53's
    /// reproducer; measured here: without `keep_awake` the loop below stopped within a few hundred
    /// rounds). The first run starts `keep_awake`'s task, which stays on the executor for the later
    /// ones.
    #[test]
    fn an_executor_parked_with_work_queued_wakes_up_and_runs_it() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let executor = glommio::LocalExecutorBuilder::default()
                .preempt_timer(Duration::from_micros(50))
                .make()
                .expect("executor");
            let _awake = executor.run(async {
                let awake = keep_awake();
                glommio::timer::sleep(Duration::from_millis(1)).await;
                awake
            });
            for round in 0..3_000u32 {
                let got = executor.run(async move {
                    let task = glommio::spawn_local(async move { round * 2 });
                    task.await
                });
                assert_eq!(got, round * 2);
            }
            done.send(()).expect("the test waits");
        });
        // A hang detector, not a speed check: the rounds take well under a second when they end.
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the executor stopped making progress with runnable work queued");
    }
}
