//! The client's thread-per-core driver, like the broker's: a fixed set of worker threads (one
//! per CPU the client may use), each an epoll loop over many non-blocking connections. A
//! thousand connections then cost a handful of threads instead of two thousand, and the
//! client's own scheduling does not become what the benchmark measures.
//!
//! A connection is a `Session`: a state machine the loop calls whenever something may have
//! changed for it (its socket became readable or writable, the time it asked for came, the run
//! stopped, or a periodic sweep so it can check its timeouts). Sockets are registered
//! edge-triggered for reading and writing once, so nothing is re-armed per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;
use std::time::Duration;

use crate::stats::{Stats, now_ns};
use crate::wire;

/// Longest wait in epoll while sessions are still being handed over: a new connection starts
/// at most this late.
const SESSION_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Longest wait in epoll otherwise, so the stop flag (deadline, Ctrl-C) is seen this soon.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// How often every session is called regardless of events, to check its socket timeouts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 256;

/// What a session waits for after a call.
pub enum Step {
    /// More to do: call again on socket readiness, or at this time on the `now_ns` clock.
    Wait { wake_at_ns: Option<u64> },
    /// Finished (or failed, with its error counted): the loop drops it, closing the socket.
    Done,
}

/// A connection the worker's event loop drives.
pub trait Session {
    /// The non-blocking socket to watch.
    fn fd(&self) -> RawFd;
    /// Does all the connection can do now without blocking: reads what arrived if `readable`
    /// (edge-triggered: until the socket is empty), sends what is due, checks its timeouts.
    fn advance(&mut self, now_ns: u64, readable: bool) -> Step;
}

/// The CPU of each worker thread: one per CPU of --cpus, pinned, or else one per CPU this
/// process may run on, unpinned (the kernel balances them like the broker's other load).
fn worker_cpus(cpus: Option<&[usize]>) -> Vec<Option<usize>> {
    match cpus {
        Some(list) => {
            let mut list = list.to_vec();
            list.sort_unstable();
            list.dedup();
            list.into_iter().map(Some).collect()
        }
        None => {
            let n = thread::available_parallelism().map_or(1, |n| n.get());
            vec![None; n]
        }
    }
}

/// How many worker threads `Workers::start` runs for `sessions` sessions: session `i` goes to
/// worker `i % worker_count`.
pub fn worker_count(cpus: Option<&[usize]>, sessions: usize) -> usize {
    worker_cpus(cpus).len().min(sessions).max(1)
}

/// The worker threads, started before the connections exist so that each connection starts
/// working as soon as it is set up, as it did with a thread of its own.
pub struct Workers<S> {
    queues: Vec<Sender<S>>,
    handles: Vec<thread::JoinHandle<()>>,
    added: usize,
}

impl<S: Session + Send + 'static> Workers<S> {
    /// Starts as many workers as there are CPUs to use, but no more than `sessions_max`.
    pub fn start(
        cpus: Option<&[usize]>,
        sessions_max: usize,
        stats: &Arc<Stats>,
    ) -> wire::Result<Workers<S>> {
        let mut workers = Workers {
            queues: Vec::new(),
            handles: Vec::new(),
            added: 0,
        };
        for (index, cpu) in worker_cpus(cpus).into_iter().take(sessions_max).enumerate() {
            let (queue, sessions) = mpsc::channel();
            let stats = stats.clone();
            let handle = thread::Builder::new()
                .name(format!("bench-worker{index}"))
                .spawn(move || run_worker(index, cpu, &sessions, &stats))
                .map_err(wire::io_err("start a worker thread"))?;
            workers.queues.push(queue);
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// Hands `session` to the next worker in turn, which starts driving it at once.
    pub fn add(&mut self, session: S) {
        let queue = &self.queues[self.added % self.queues.len()];
        // A worker that could not start has counted that error and is gone; the session is
        // dropped with it.
        let _ = queue.send(session);
        self.added += 1;
    }

    /// Says no more sessions will come: each worker returns once its sessions are done.
    pub fn finish(self) -> Vec<thread::JoinHandle<()>> {
        self.handles
    }
}

/// Starts the worker threads `Workers::start` would for `sessions_max` sessions and hands them
/// `sessions`, which they start driving at once. Returns the workers' handles for
/// `stats::run_workers`.
pub fn start_sessions<S: Session + Send + 'static>(
    sessions: Vec<S>,
    sessions_max: usize,
    cpus: Option<&[usize]>,
    stats: &Arc<Stats>,
) -> wire::Result<Vec<thread::JoinHandle<()>>> {
    let mut workers = Workers::start(cpus, sessions_max, stats)?;
    for session in sessions {
        workers.add(session);
    }
    Ok(workers.finish())
}

/// A worker thread's body: pins it, then runs its event loop until the session queue is closed
/// and every session is done.
fn run_worker<S: Session>(index: usize, cpu: Option<usize>, sessions: &Receiver<S>, stats: &Stats) {
    tighten_timer_slack();
    let result = cpu
        .map_or(Ok(()), |c| pin_to_cpus(&[c]))
        .and_then(|()| EventLoop::new().map_err(|e| format!("epoll: {e}")))
        .and_then(|mut event_loop| {
            event_loop
                .run(sessions, stats)
                .map_err(|e| format!("epoll wait: {e}"))
        });
    if let Err(e) = result {
        stats.error(format!("worker {index} (cpu {cpu:?}): {e}"));
    }
}

/// One worker's sessions and timers around one epoll instance.
struct EventLoop<S> {
    epoll: OwnedFd,
    /// Indexed by the token registered with epoll; a finished session leaves `None`. Sessions
    /// are only added while the run starts, so slots are never reused.
    sessions: Vec<Option<S>>,
    /// The wake-up time each session asked for; an entry in `timers` that does not match it
    /// is stale and skipped.
    armed: Vec<Option<u64>>,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    live: usize,
    /// The stop flag was seen (and every session called once since).
    stopping: bool,
    last_sweep_ns: u64,
}

impl<S: Session> EventLoop<S> {
    fn new() -> io::Result<EventLoop<S>> {
        // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventLoop {
            // SAFETY: fd was just created and nothing else owns it.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            sessions: Vec::new(),
            armed: Vec::new(),
            timers: BinaryHeap::new(),
            live: 0,
            stopping: false,
            last_sweep_ns: now_ns(),
        })
    }

    /// Waits for socket events and timers and calls the sessions concerned, until `sessions`
    /// is closed and every session is done.
    fn run(&mut self, sessions: &Receiver<S>, stats: &Stats) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        let mut taking = true;
        loop {
            if taking {
                taking = self.take_sessions(sessions, stats);
            }
            if !taking && self.live == 0 {
                return Ok(());
            }
            self.sweep_if_due(stats);
            let wait_max = if taking {
                SESSION_POLL_INTERVAL
            } else {
                STOP_CHECK_INTERVAL
            };
            let ready = self.wait(&mut events, self.wait_for(now_ns(), wait_max))?;
            self.dispatch(&events[..ready]);
            self.fire_timers(now_ns());
        }
    }

    /// Calls every session once the run stops (those sleeping until their next batch learn of
    /// it only when called) and every SWEEP_INTERVAL (so each can check its timeouts).
    fn sweep_if_due(&mut self, stats: &Stats) {
        let now = now_ns();
        let stop_seen = !self.stopping && stats.stopped();
        self.stopping |= stop_seen;
        if stop_seen || now.saturating_sub(self.last_sweep_ns) >= SWEEP_INTERVAL.as_nanos() as u64 {
            self.last_sweep_ns = now;
            for slot in 0..self.sessions.len() {
                self.advance(slot, now, false);
            }
        }
    }

    /// Calls the session of each socket epoll reported.
    fn dispatch(&mut self, events: &[libc::epoll_event]) {
        let now = now_ns();
        let readable_mask =
            (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        for event in events {
            self.advance(event.u64 as usize, now, event.events & readable_mask != 0);
        }
    }

    /// Registers the sessions handed over so far and gives each its first call; false once
    /// the queue is closed and empty.
    fn take_sessions(&mut self, sessions: &Receiver<S>, stats: &Stats) -> bool {
        loop {
            match sessions.try_recv() {
                Ok(session) => {
                    if let Err(e) = self.add(session) {
                        stats.error(format!("epoll add: {e}"));
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn add(&mut self, session: S) -> io::Result<()> {
        let slot = self.sessions.len();
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: slot as u64,
        };
        // SAFETY: both fds are open; the kernel copies `event` and keeps no pointer to it.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                session.fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.sessions.push(Some(session));
        self.armed.push(None);
        self.live += 1;
        self.advance(slot, now_ns(), false);
        Ok(())
    }

    /// Calls one session and files what it waits for next.
    fn advance(&mut self, slot: usize, now: u64, readable: bool) {
        let Some(session) = self.sessions.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match session.advance(now, readable) {
            Step::Done => {
                // Dropping closes the socket, which also takes it out of the epoll set.
                self.sessions[slot] = None;
                self.armed[slot] = None;
                self.live -= 1;
            }
            Step::Wait {
                wake_at_ns: Some(at),
            } if self.armed[slot] != Some(at) => {
                self.armed[slot] = Some(at);
                self.timers.push(Reverse((at, slot)));
            }
            Step::Wait { .. } => {}
        }
    }

    /// Calls every session whose wake-up time has come.
    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            if self.armed[slot] == Some(at) {
                self.armed[slot] = None;
                self.advance(slot, now, false);
            }
        }
    }

    /// How long epoll may sleep: until the earliest timer, at most `wait_max`.
    fn wait_for(&self, now: u64, wait_max: Duration) -> Duration {
        match self.timers.peek() {
            Some(&Reverse((at, _))) => Duration::from_nanos(at.saturating_sub(now)).min(wait_max),
            None => wait_max,
        }
    }

    /// epoll_pwait2, whose timeout has nanosecond resolution (epoll_wait's milliseconds would
    /// make every rate-limited send up to a millisecond late). Returns the events ready.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` is valid for its length, which is what we pass; the kernel reads
        // `timeout` during the call only; a null sigmask leaves the mask unchanged.
        let n = unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &timeout,
                std::ptr::null(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => Ok(0), // Ctrl-C: the loop looks at the stop flag
            _ => Err(e),
        }
    }
}

/// Pins the calling thread, and every thread it starts later, to `cpus`.
pub fn pin_to_cpus(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it, and the numbers were
    // checked against CPU_SETSIZE. sched_setaffinity reads the set and keeps no pointer.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in cpus {
            libc::CPU_SET(*cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("--cpus: {}", io::Error::last_os_error()))
    }
}

/// Lets this thread's waits end within microseconds of their deadline instead of the default
/// 50 µs timer slack: a late wake-up would count as broker latency in rate-limited runs.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_listed_cpu_or_per_available_cpu() {
        assert_eq!(
            worker_cpus(Some(&[3, 1, 3])),
            vec![Some(1), Some(3)],
            "a CPU listed twice still gets one worker"
        );
        let unpinned = worker_cpus(None);
        assert!(!unpinned.is_empty() && unpinned.iter().all(Option::is_none));
    }
}
