//! Shard-local wake-ups without a runtime: a generation notifier (long polls, sync rounds) and
//! a FIFO async lock (appends land in the order they were first polled). Both are `!Send` and
//! clean up after futures dropped while waiting, so a timed-out long poll leaves nothing behind.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter registered before `notify_all`.
#[derive(Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    next_waiter: Cell<u64>,
    wakers: RefCell<BTreeMap<u64, Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// A future completing at the first `notify_all` after this call (not after its first poll).
    pub fn notified(self: &Rc<Self>) -> Notified {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        Notified {
            notify: Rc::clone(self),
            seen_generation: self.generation.get(),
            id,
        }
    }

    #[cfg(test)]
    pub fn waiters(&self) -> usize {
        self.wakers.borrow().len()
    }
}

pub(crate) struct Notified {
    notify: Rc<Notify>,
    seen_generation: u64,
    id: u64,
}

impl Future for Notified {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen_generation {
            return Poll::Ready(());
        }
        self.notify
            .wakers
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        self.notify.wakers.borrow_mut().remove(&self.id);
    }
}

/// A lock handed over in first-poll order. New lockers queue behind waiters, never barge.
/// `changed` fires whenever the lock is released or a queued locker gives up, so a task that
/// waits for the lock to become uncontended can re-check.
#[derive(Default)]
pub(crate) struct FifoLock {
    state: RefCell<FifoState>,
    changed: Rc<Notify>,
}

#[derive(Default)]
struct FifoState {
    held: bool,
    next_id: u64,
    waiters: VecDeque<(u64, Option<Waker>)>,
}

impl FifoState {
    fn wake_front(&mut self) {
        if let Some((_, Some(waker))) = self.waiters.front_mut() {
            waker.wake_by_ref();
        }
    }
}

impl FifoLock {
    pub fn new(changed: Rc<Notify>) -> FifoLock {
        FifoLock {
            state: RefCell::default(),
            changed,
        }
    }

    pub fn lock(&self) -> FifoLockFuture<'_> {
        FifoLockFuture {
            lock: self,
            id: None,
            done: false,
        }
    }

    /// Someone holds the lock or waits for it.
    pub fn is_contended(&self) -> bool {
        let state = self.state.borrow();
        state.held || !state.waiters.is_empty()
    }

    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        self.state.borrow().held
    }
}

pub(crate) struct FifoLockFuture<'a> {
    lock: &'a FifoLock,
    id: Option<u64>,
    done: bool,
}

/// Holding it is holding the lock; dropping it hands the lock to the next waiter.
pub(crate) struct FifoGuard<'a> {
    lock: &'a FifoLock,
}

impl<'a> Future for FifoLockFuture<'a> {
    type Output = FifoGuard<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FifoGuard<'a>> {
        assert!(!self.done, "polled after completion");
        let lock = self.lock;
        let mut state = lock.state.borrow_mut();
        let ready = match self.id {
            None => !state.held && state.waiters.is_empty(),
            Some(id) => !state.held && state.waiters.front().is_some_and(|w| w.0 == id),
        };
        if ready {
            if self.id.is_some() {
                state.waiters.pop_front();
            }
            state.held = true;
            drop(state);
            self.done = true;
            return Poll::Ready(FifoGuard { lock });
        }
        match self.id {
            None => {
                let id = state.next_id;
                state.next_id += 1;
                state.waiters.push_back((id, Some(cx.waker().clone())));
                drop(state);
                self.id = Some(id);
            }
            Some(id) => {
                let slot = state.waiters.iter_mut().find(|w| w.0 == id);
                slot.expect("a waiting future stays queued").1 = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for FifoLockFuture<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        if self.done {
            return;
        }
        let mut state = self.lock.state.borrow_mut();
        let was_front = state.waiters.front().is_some_and(|w| w.0 == id);
        state.waiters.retain(|w| w.0 != id);
        // A cancelled front waiter may have been woken for the lock; pass the wake-up on.
        if was_front && !state.held {
            state.wake_front();
        }
        drop(state);
        self.lock.changed.notify_all();
    }
}

impl Drop for FifoGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state.borrow_mut();
        assert!(state.held, "a guard exists only while the lock is held");
        state.held = false;
        state.wake_front();
        drop(state);
        self.lock.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn notified_completes_after_notify_and_cleans_up() {
        let notify = Rc::new(Notify::default());
        let mut early = notify.notified();
        assert!(poll(&mut early).is_pending());
        let dropped = notify.notified();
        let mut dropped = dropped;
        assert!(poll(&mut dropped).is_pending());
        assert_eq!(notify.waiters(), 2);
        drop(dropped);
        assert_eq!(notify.waiters(), 1);
        notify.notify_all();
        assert!(poll(&mut early).is_ready());
        let mut late = notify.notified();
        assert!(poll(&mut late).is_pending());
    }

    #[test]
    fn fifo_lock_serves_in_order_and_survives_cancellation() {
        let changed = Rc::new(Notify::default());
        let lock = FifoLock::new(Rc::clone(&changed));
        let mut first = lock.lock();
        let Poll::Ready(guard) = poll(&mut first) else {
            panic!("free lock")
        };
        let mut second = lock.lock();
        let mut third = lock.lock();
        let mut fourth = lock.lock();
        assert!(poll(&mut second).is_pending());
        assert!(poll(&mut third).is_pending());
        assert!(poll(&mut fourth).is_pending());
        drop(guard);
        let mut barger = lock.lock();
        assert!(poll(&mut barger).is_pending(), "queued waiters go first");
        let mut change = changed.notified();
        assert!(poll(&mut change).is_pending());
        drop(second); // Cancelled while at the front: third is next.
        assert!(poll(&mut change).is_ready(), "giving up is a change");
        assert!(poll(&mut fourth).is_pending());
        let Poll::Ready(guard) = poll(&mut third) else {
            panic!("third is next")
        };
        drop(guard);
        assert!(matches!(poll(&mut fourth), Poll::Ready(_)));
        assert!(!lock.is_held());
        assert!(matches!(poll(&mut barger), Poll::Ready(_)));
    }
}
