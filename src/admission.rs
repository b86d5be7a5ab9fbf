//! The waiters' side of admission: who is queued, in what order, and the hand-off.
//!
//! A get that finds nothing to take (no idle connection, no free slot; see `engine.rs`)
//! queues here and is later *handed* a unit by a return. Gets that find something take it
//! without coming here at all, unless others are queued already (no barging).
//!
//! # The line and the slots
//!
//! Each waiter has a [`WaitSlot`]: a small state word, a cell for the unit handed to it, and an
//! `event_listener::Event` that only this waiter listens on. The slots stand in a FIFO line (a
//! `VecDeque` behind a mutex held for a push or a pop): a return pops the oldest slot, puts
//! its unit in it, and notifies that slot's event; a waiter that leaves early just marks its
//! slot (one CAS, no lock), and marked slots are skipped and dropped by later pops (and the
//! line is compacted when they pile up, so it never holds more than about twice the live
//! waiters). This is event-listener's own structure turned inside out, for three reasons
//! measured in `benches/PERF-LOG.md`: a shared `Event` wakes the task *while holding its list
//! lock* (so under contention every wake stretches a critical section that every waiter and
//! returner needs, four times per wait); here the shared lock is taken twice per served wait
//! and nobody wakes a task under it. Waking one waiter never disturbs the others' places in
//! line. And the line can be read, in order, without waking anybody.
//!
//! # The waiting word
//!
//! `waiting` packs two numbers in one atomic, so that a registration is one read-modify-write:
//! the number of queued waiters (low 32 bits) and a registration epoch (high 32 bits, wrapping),
//! bumped by every registration. A return loads the word before it puts a unit back and again
//! after: a changed epoch means a waiter registered in between, whose re-check may have run
//! before the unit arrived (see `Engine::give`).
//!
//! # Protocol
//!
//! A waiter: its slot joins the back of the line, *then* it counts itself in `waiting`
//! (SeqCst), then a SeqCst fence, then it re-checks for a unit, then it waits on its slot's
//! event. A return that finds `waiting` non-zero calls [`hand_off`](Admission::hand_off): it
//! pops the oldest slot, puts its unit in the slot's cell, and moves the slot from `WAITING` to
//! `HANDED` with a CAS (if the CAS fails, the slot's waiter left: the unit comes back out and
//! the next slot is tried), then notifies it. The unit in a `HANDED` slot is its waiter's:
//! nobody can barge in between. A waiter that leaves (cancelled, timed out, or served by its
//! own re-check) moves its slot from `WAITING` to `ABANDONED` with a CAS; if that fails because
//! a return won the race (`HANDED`), the waiter takes the unit out and passes it on.
//!
//! Because a waiter is counted only after its slot is in line, a counted waiter always has a
//! slot in line, handed, or leaving: if `hand_off` finds no `WAITING` slot, every counted
//! waiter is served or leaving.
//!
//! # One timer for the line
//!
//! A get waiting with the pool's own `wait_timeout` (a *shared* deadline) does not arm a timer
//! of its own. Its deadline is written in its slot, and since every such deadline is its
//! waiter's start plus the same timeout, they grow from the front of the line to the back.
//! One waiter at a time holds the *timer duty* ([`Queued::take_duty`]): it arms one timer for
//! the earliest shared deadline, and when it fires it walks the line from the front,
//! [expires](Admission::expire_due) every slot whose deadline passed (`WAITING` to
//! `EXPIRED`, by CAS, against `hand_off`'s CAS) and re-arms for the next. A holder that leaves
//! gives the duty up and wakes the slot at the back of the line (the waiter that will stay
//! longest), which takes it; a newcomer that finds the duty free takes it too (a wake costs no
//! place in line: the line, not the event, keeps the order). So a waiting get arms no timer at
//! all unless it holds the duty, which changes hands about once per turnover of the line; the
//! timer that is armed is a real tokio timer, so a paused clock still advances to it. A get
//! with a timeout of its own (`get_timeout`), or waiting on another runtime than the pool's,
//! arms its own timer, and never takes the duty nor is nudged to: a timer fires only while its
//! runtime runs, and only the waiters on the pool's own runtime share the deadline, so no
//! waiter's deadline hangs on another runtime's timer.

use std::collections::VecDeque;

use crate::idle::{Conn, Token};
use crate::lanes::{self, Lane};
use crate::sync::{
    fence_seqcst, instant_at, nanos_since, ArrayQueue, AtomicBool, AtomicCell, AtomicU64, AtomicU8,
    AtomicUsize, CachePadded, Instant, Mutex, MutexGuard, Ordering, SlotArc as Arc, WaitQueue,
};

/// One waiter in the low half of the waiting word.
const ONE_WAITER: u64 = 1;
/// One registration in the high half (the epoch).
const ONE_EPOCH: u64 = 1 << 32;

/// A slot in line; nobody has decided about it yet.
const WAITING: u8 = 0;
/// A return handed it a unit (in its cell); its waiter has not taken it yet.
const HANDED: u8 = 1;
/// Its waiter took the unit handed to it.
const TAKEN: u8 = 2;
/// Its waiter left before anything was handed to it.
const ABANDONED: u8 = 3;
/// The pool closed while it waited.
const CLOSED: u8 = 4;
/// Its shared deadline passed (set by the timer duty's walk).
const EXPIRED: u8 = 5;

/// A slot's `deadline` when its waiter has no shared deadline.
const NO_DEADLINE: u64 = u64::MAX;

/// A load of the waiting word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiting(u64);

impl Waiting {
    /// Queued waiters.
    #[inline]
    pub(crate) fn waiters(self) -> u64 {
        self.0 & (ONE_EPOCH - 1)
    }

    /// Has a waiter registered since `earlier` was read (and is anyone still queued)? The
    /// epoch wraps after 2^32 registrations; two loads within one return never see that many.
    #[inline]
    pub(crate) fn registered_since(self, earlier: Waiting) -> bool {
        self.waiters() != 0 && self.0 >> 32 != earlier.0 >> 32
    }
}

/// One waiter's place: its state, its shared deadline, the unit handed to it, and the event
/// only it listens on.
pub(crate) struct WaitSlot<C> {
    state: AtomicU8,
    /// Nanoseconds from the admission's epoch, or [`NO_DEADLINE`].
    deadline: AtomicU64,
    /// The connection handed over (a free slot handed over is `HANDED` with nothing here). Written
    /// by one return before its CAS to `HANDED`, taken by the waiter after it saw that: never
    /// contended, one atomic swap on each side.
    unit: AtomicCell<Option<Conn<C>>>,
    event: WaitQueue,
}

/// What a waiter learns when it looks at its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Nothing yet.
    Waiting,
    /// A unit was handed to it: [`Queued::take_unit`].
    Handed,
    /// The pool closed.
    Closed,
    /// Its shared deadline passed.
    Expired,
}

impl<C> WaitSlot<C> {
    fn new() -> Self {
        WaitSlot {
            state: AtomicU8::new(WAITING),
            deadline: AtomicU64::new(NO_DEADLINE),
            unit: AtomicCell::new(None),
            event: WaitQueue::new(),
        }
    }

    /// Puts a unit in the cell (before the CAS that hands it over).
    fn put_unit(&self, t: Token<C>) {
        let old = match t {
            Token::Conn(c) => self.unit.swap(Some(c)),
            Token::Slot => self.unit.take(),
        };
        debug_assert!(old.is_none(), "a slot's cell holds one unit at most");
        drop(old);
    }

    /// Takes the handed unit out of the cell (`HANDED`: whatever is there; a slot if empty).
    fn take_unit(&self) -> Token<C> {
        self.unit.take().map_or(Token::Slot, Token::Conn)
    }

    /// Still waiting (not handed, left, expired or closed)?
    fn is_waiting(&self) -> bool {
        // Acquire: pairs with the CASes that move a slot on.
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Does its waiter wait with a shared deadline (the line's timer keeps it)? Only such a
    /// waiter takes the timer duty, or is nudged to.
    fn has_shared_deadline(&self) -> bool {
        // Relaxed: written by its waiter in `Queued::new` before the slot was pushed under the
        // line's lock; read by that waiter, or under that lock.
        self.deadline.load(Ordering::Relaxed) != NO_DEADLINE
    }
}

/// The waiting word, the line and the timer duty (see the module docs).
pub(crate) struct Admission<C> {
    /// What every registration and every hand-off touches, on one cache line.
    front: CachePadded<Front<C>>,
    /// Spare slots per thread lane (see `lanes.rs`): a wait then allocates nothing once its
    /// thread has waited before, and takes its slot from a line no other core writes.
    spares: Box<[CachePadded<Spare<C>>]>,
    /// Does a waiter hold the timer duty?
    duty: CachePadded<AtomicBool>,
    /// What slots' deadlines count from.
    epoch: Instant,
    /// Told whenever a waiter takes the duty (for the models, which wait for it).
    #[cfg(loom)]
    duty_taken: loom::sync::Notify,
}

/// A thread lane's spare slots: one at hand, taken and left with one swap (a lane whose
/// waits come one at a time needs no more), and up to [`SPARES_BEHIND`] behind it for a lane
/// whose line grows by several waiters at once and is then served (a burst of gets, or a pool
/// of a few connections shared by many tasks): without them each wait of such a burst but one
/// allocated its slot and the slot's event, and freed both when served.
struct Spare<C> {
    hand: AtomicCell<Option<Arc<WaitSlot<C>>>>,
    behind: ArrayQueue<Arc<WaitSlot<C>>>,
}

/// How many spare slots a lane keeps behind the one at hand (each a small block, with its
/// event's list beside it); a burst larger than this allocates slots for the rest.
const SPARES_BEHIND: usize = 8;

impl<C> Spare<C> {
    fn new() -> Self {
        Spare {
            hand: AtomicCell::new(None),
            behind: ArrayQueue::new(SPARES_BEHIND),
        }
    }
}

/// The waiting word, the line's lock, and the count of marked slots in it.
struct Front<C> {
    waiting: AtomicU64,
    /// Marked slots still in line (see [`Line`]).
    marks: AtomicUsize,
    /// Slots in arrival order; some may be marked (left, expired, closed): see [`Line`].
    line: Mutex<Line<C>>,
}

/// The line: slots in arrival order, some of them marked (their count, an estimate that only
/// errs high, is `Front::marks`: a slot marked after its pop is counted and never found).
/// Marked slots are dropped when popped, and all at once when they outnumber the live ones.
struct Line<C> {
    slots: VecDeque<Arc<WaitSlot<C>>>,
}

impl<C> Admission<C> {
    pub(crate) fn new() -> Self {
        Admission {
            front: CachePadded::new(Front {
                waiting: AtomicU64::new(0),
                marks: AtomicUsize::new(0),
                line: Mutex::new(Line {
                    slots: VecDeque::new(),
                }),
            }),
            spares: (0..=lanes::owned())
                .map(|_| CachePadded::new(Spare::new()))
                .collect(),
            duty: CachePadded::new(AtomicBool::new(false)),
            epoch: Instant::now(),
            #[cfg(loom)]
            duty_taken: loom::sync::Notify::new(),
        }
    }

    fn line(&self) -> MutexGuard<'_, Line<C>> {
        // Nothing that can panic runs under the lock but `VecDeque` growth; a poisoned line is
        // still consistent (every update completes before the next one starts).
        self.front.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn to_nanos(&self, at: Instant) -> u64 {
        nanos_since(self.epoch, at).min(NO_DEADLINE - 1)
    }

    fn to_instant(&self, nanos: u64) -> Instant {
        instant_at(self.epoch, nanos)
    }

    /// This thread's spare-slot cell.
    fn spare(&self) -> &Spare<C> {
        &self.spares[Lane::current().slot(self.spares.len() - 1)]
    }

    /// A slot for a new waiter: this thread's spare one if any.
    fn slot(&self) -> Arc<WaitSlot<C>> {
        let spare = self.spare();
        match spare.hand.take().or_else(|| spare.behind.pop()) {
            Some(slot) => {
                // Relaxed: the slot is ours alone (see `recycle`); the cell's swap, or the
                // queue's push and pop (release and acquire), ordered its last user's accesses
                // before this store.
                slot.state.store(WAITING, Ordering::Relaxed);
                slot
            }
            None => Arc::new(WaitSlot::new()),
        }
    }

    /// Keeps `slot` for reuse if nobody else holds it (its line entry gone, no return about to
    /// notify it); else the last holder frees it.
    fn recycle(&self, slot: Arc<WaitSlot<C>>) {
        // Not under loom: the spare cell and queue are crossbeam's, whose synchronization loom
        // does not see, and a slot's atomics are loom's (loom would report the reuse as a race).
        // The slots' protocol is the same either way; reuse only saves allocations.
        if cfg!(not(loom)) && Arc::strong_count(&slot) == 1 {
            let spare = self.spare();
            if let Some(displaced) = spare.hand.swap(Some(slot)) {
                // The lane keeps a few more behind; beyond them the slot is freed.
                drop(spare.behind.push(displaced));
            }
        }
    }

    /// Counts a slot that was marked while (perhaps) still in line.
    fn marked(&self) {
        // Relaxed: an estimate that only triggers a compaction (see `Line`).
        self.front.marks.fetch_add(1, Ordering::Relaxed);
    }

    /// The waiting word, for the handshake loads of the return path.
    #[inline]
    pub(crate) fn load(&self) -> Waiting {
        // SeqCst: the load halves of the return path's handshake (see `Engine::give`): with
        // the SeqCst registration below they sit in one total order, so a return either sees
        // a registration or the registrant's re-check sees the returned unit.
        Waiting(self.front.waiting.load(Ordering::SeqCst))
    }

    /// Nobody queued? The fast path's test (fairness only: a stale answer lets one newcomer
    /// in ahead of a waiter that is just registering, which is no worse than arriving first).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // Relaxed: a fairness hint; no correctness depends on it (see above).
        Waiting(self.front.waiting.load(Ordering::Relaxed)).waiters() == 0
    }

    /// Does a waiter hold the timer duty (for the models)?
    #[cfg(loom)]
    pub(crate) fn duty_held(&self) -> bool {
        // Acquire: read by a model thread that then relies on the holder's progress.
        self.duty.load(Ordering::Acquire)
    }

    /// Blocks the model thread until a waiter holds the timer duty.
    #[cfg(loom)]
    pub(crate) fn wait_for_duty(&self) {
        while !self.duty_held() {
            self.duty_taken.wait();
        }
    }

    /// Queued waiters (a gauge).
    pub(crate) fn waiters(&self) -> usize {
        // Relaxed: a gauge for status.
        usize::try_from(Waiting(self.front.waiting.load(Ordering::Relaxed)).waiters()).unwrap_or(0)
    }

    /// Hands `unit` to the oldest waiting slot; gives it back if there is none.
    pub(crate) fn hand_off(&self, unit: Token<C>) -> Result<(), Token<C>> {
        let mut unit = unit;
        loop {
            let Some(slot) = self.line().slots.pop_front() else {
                return Err(unit);
            };
            if !slot.is_waiting() {
                // Marked: its waiter left (or it expired, or closed).
                self.drop_marked(slot);
                continue;
            }
            // The unit goes in first: the waiter looks at the cell only once it sees `HANDED`.
            slot.put_unit(unit);
            // AcqRel on success: the Release half publishes the unit (and what preceded it) to
            // the waiter that reads `HANDED` (Acquire). On failure the waiter left meanwhile:
            // the unit comes back out and the next slot is tried.
            #[cfg(not(connpool_mutant = "hand_off_no_cas"))]
            let won = slot
                .state
                .compare_exchange(WAITING, HANDED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            // Mutant: hands to the slot whatever its waiter did meanwhile.
            #[cfg(connpool_mutant = "hand_off_no_cas")]
            let won = {
                slot.state.store(HANDED, Ordering::Release);
                true
            };
            if won {
                slot.event.notify(1);
                self.recycle(slot);
                return Ok(());
            }
            unit = slot.take_unit();
            self.drop_marked(slot);
        }
    }

    /// A marked slot popped from the line: uncounted, and kept for reuse if nobody else holds
    /// it.
    fn drop_marked(&self, slot: Arc<WaitSlot<C>>) {
        // Relaxed: see `marked`; saturating, since the count only errs high.
        let _ = self
            .front
            .marks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| m.checked_sub(1));
        self.recycle(slot);
    }

    /// Wakes every waiter (the pool closed: they see `Closed`). A slot already handed keeps
    /// its unit: its waiter takes it and passes it on (into the closed pool, which closes it).
    pub(crate) fn close_all(&self) {
        let slots: Vec<_> = self.line().slots.drain(..).collect();
        // Relaxed: the line is empty.
        self.front.marks.store(0, Ordering::Relaxed);
        for slot in slots {
            // AcqRel: as in `hand_off`.
            let closed = slot
                .state
                .compare_exchange(WAITING, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if closed && !cfg!(connpool_mutant = "close_no_wake") {
                slot.event.notify(1);
            }
            self.recycle(slot);
        }
    }

    /// The timer duty's walk (see the module docs): expires every waiting slot from the
    /// front whose shared deadline is at or before `now`, and returns the next shared deadline
    /// in line, if any (the duty holder re-arms for it).
    pub(crate) fn expire_due(&self, now: Instant) -> Option<Instant> {
        let now = self.to_nanos(now);
        let mut expired = Vec::new();
        let mut next = None;
        {
            let mut line = self.line();
            // Marked slots at the front go first (cheap cleanup).
            while line.slots.front().is_some_and(|s| !s.is_waiting()) {
                if let Some(slot) = line.slots.pop_front() {
                    self.drop_marked(slot);
                }
            }
            for slot in &line.slots {
                // Relaxed: written before the slot was pushed under this lock.
                let deadline = slot.deadline.load(Ordering::Relaxed);
                if deadline == NO_DEADLINE || !slot.is_waiting() {
                    // A waiter with a timer of its own, or a marked slot.
                    continue;
                }
                if deadline > now && !cfg!(connpool_mutant = "expire_early") {
                    next = Some(deadline);
                    break;
                }
                // AcqRel: the race with the waiter's own leaving (a slot it abandoned stays
                // as it is). `hand_off` cannot race with this: it pops a slot under the lock
                // this walk holds before it touches the state.
                let won = slot
                    .state
                    .compare_exchange(WAITING, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if won {
                    expired.push(Arc::clone(slot));
                }
            }
            line.compact_if_needed(&self.front.marks, expired.len());
        }
        for slot in expired {
            slot.event.notify(1);
        }
        next.map(|n| self.to_instant(n))
    }

    /// Wakes the last waiting slot in line with a shared deadline, the shared waiter that will
    /// stay longest (it finds the timer duty free and takes it; a waiter without a shared
    /// deadline never takes it, so it is passed over). A wake costs the waiter nothing: its
    /// place is in the line.
    fn nudge_back(&self) {
        let back = self
            .line()
            .slots
            .iter()
            .rev()
            .find(|s| {
                s.is_waiting()
                    && (s.has_shared_deadline() || cfg!(connpool_mutant = "nudge_unshared"))
            })
            .cloned();
        if let Some(slot) = back {
            slot.event.notify(1);
        }
    }
}

impl<C> Line<C> {
    /// Drops every marked slot (keeping the order) once they outnumber the live ones: a line
    /// whose waiters keep leaving without being served (cancelled, timed out) stays at about
    /// twice its live waiters. O(n), at most once per n marks: amortised O(1).
    fn compact_if_needed(&mut self, marks: &AtomicUsize, new_marks: usize) {
        // Relaxed: see `Admission::marked` (a plain load when there is nothing to add).
        let m = if new_marks == 0 {
            marks.load(Ordering::Relaxed)
        } else {
            marks.fetch_add(new_marks, Ordering::Relaxed) + new_marks
        };
        if m > self.slots.len() / 2 + 16 {
            self.slots.retain(|s| s.is_waiting());
            marks.store(0, Ordering::Relaxed);
        }
    }
}

/// A queued waiter: its slot in line, counted in `waiting`. [`leave`](Self::leave) (once)
/// uncounts it and marks its slot; dropping it offers the slot for reuse.
pub(crate) struct Queued<'a, C> {
    admission: &'a Admission<C>,
    slot: Option<Arc<WaitSlot<C>>>,
    left: bool,
    /// Holds the timer duty. (Only its own waiter touches it; atomic so that `take_duty` can
    /// take `&self` while the waiter's listener borrows the slot.)
    duty: AtomicBool,
}

impl<C> Drop for Queued<'_, C> {
    fn drop(&mut self) {
        // A unit handed but not taken is the caller's to pass on (see `leave`); here it is
        // only dropped if the caller did not.
        drop(self.leave());
        if let Some(slot) = self.slot.take() {
            self.admission.recycle(slot);
        }
    }
}

impl<'a, C> Queued<'a, C> {
    /// Queues a new waiter: its slot at the back of the line, then counted (SeqCst), then a
    /// SeqCst fence; the caller re-checks for a unit next. `shared` is its deadline if it is
    /// the pool's shared one (start + `wait_timeout`; see the module docs).
    pub(crate) fn new(admission: &'a Admission<C>, shared: Option<Instant>) -> Self {
        let slot = admission.slot();
        let deadline = shared.map_or(NO_DEADLINE, |d| admission.to_nanos(d));
        // Relaxed: published to the duty's walk by the line's lock (the push below).
        slot.deadline.store(deadline, Ordering::Relaxed);
        {
            let mut line = admission.line();
            line.slots.push_back(Arc::clone(&slot));
            line.compact_if_needed(&admission.front.marks, 0);
        }
        // SeqCst: the registration half of the handshake with returns (see `Admission::load`).
        admission
            .front
            .waiting
            .fetch_add(ONE_WAITER + ONE_EPOCH, Ordering::SeqCst);
        // SeqCst fence before the re-check: whatever a return put back before its handshake
        // load (which then did not see this registration) is visible to the re-check, whether
        // it is a push to the idle queue or a change of `size` (see `Engine::give`).
        fence_seqcst();
        Queued {
            admission,
            slot: Some(slot),
            left: false,
            duty: AtomicBool::new(false),
        }
    }

    fn slot(&self) -> &WaitSlot<C> {
        self.slot
            .as_ref()
            .expect("a Queued holds its slot until dropped")
    }

    /// The event this waiter listens on (with `listener!`: no allocation per listen).
    pub(crate) fn event(&self) -> &WaitQueue {
        &self.slot().event
    }

    /// Takes the timer duty if nobody holds it; `true` if this waiter holds it now. Only a
    /// waiter with a shared deadline takes it: the others may be waiting on another runtime
    /// than the shared waiters' (the pool's), whose timers fire only while it runs (see
    /// `PoolInner::get_slow`), and they arm their own timers anyway.
    pub(crate) fn take_duty(&self) -> bool {
        if !self.slot().has_shared_deadline() && !cfg!(connpool_mutant = "unshared_takes_duty") {
            return false;
        }
        // Relaxed: this waiter's own flag.
        if self.duty.load(Ordering::Relaxed) {
            return true;
        }
        // SeqCst first look: the load half of the handshake with a leaving holder (see
        // `leave`; this waiter counted itself and fenced in `new`, and listens before it
        // looks). AcqRel CAS: the holders' walks are ordered one after the other.
        let took = !self.admission.duty.load(Ordering::SeqCst)
            && self
                .admission
                .duty
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if took {
            // Relaxed: this waiter's own flag.
            self.duty.store(true, Ordering::Relaxed);
            #[cfg(loom)]
            self.admission.duty_taken.notify();
        }
        took
    }

    /// What happened to the slot.
    pub(crate) fn wake(&self) -> Wake {
        // Acquire: pairs with the Release of the CAS that moved the slot on (a unit handed
        // over is visible in the cell).
        match self.slot().state.load(Ordering::Acquire) {
            HANDED => Wake::Handed,
            CLOSED => Wake::Closed,
            EXPIRED => Wake::Expired,
            _ => Wake::Waiting,
        }
    }

    /// The unit handed to this waiter (after [`Wake::Handed`]).
    pub(crate) fn take_unit(&self) -> Token<C> {
        let unit = self.slot().take_unit();
        // Relaxed: after `HANDED` only this waiter touches the state.
        self.slot().state.store(TAKEN, Ordering::Relaxed);
        unit
    }

    /// Leaves (once; later calls return `None`): a unit handed to it that it did not take is
    /// returned, for the caller to pass on.
    pub(crate) fn leave(&mut self) -> Option<Token<C>> {
        if std::mem::replace(&mut self.left, true) {
            return None;
        }
        // SeqCst: keeps one total order with the returns' handshake loads. Uncounted first: a
        // return that sees the word afterwards does not count on us.
        self.admission
            .front
            .waiting
            .fetch_sub(ONE_WAITER, Ordering::SeqCst);
        let slot = self.slot();
        // Relaxed: `TAKEN` was our own store (served: the common way out, no CAS needed).
        let handed = if slot.state.load(Ordering::Relaxed) == TAKEN {
            None
        } else {
            // AcqRel: the race with `hand_off` for the slot (see the module docs); Acquire on
            // failure, so a unit handed to us is visible when we take it out.
            match slot.state.compare_exchange(
                WAITING,
                ABANDONED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.admission.marked();
                    None
                }
                Err(HANDED) if !cfg!(connpool_mutant = "cancel_drops_handoff") => {
                    Some(self.take_unit())
                }
                Err(_) => None,
            }
        };
        // If we held the timer duty, or it is free (a holder's nudge woke a waiter that was
        // leaving anyway), wake the back of the line to take it. A store-load handshake with
        // a registering waiter, which counts itself (SeqCst) and fences before it looks at the
        // duty: either it sees the duty free and takes it, or we see it counted (its slot is in
        // line before it counts) and wake it.
        // Relaxed: this waiter's own flag.
        let held = self.duty.swap(false, Ordering::Relaxed);
        let free = if held {
            // SeqCst: the store half of the handshake (and Release for the next holder's CAS:
            // our walks are done).
            self.admission.duty.store(false, Ordering::SeqCst);
            fence_seqcst();
            true
        } else {
            // SeqCst: a free duty that a holder's nudge left to a waiter that was leaving
            // anyway (this one) is passed on too.
            !self.admission.duty.load(Ordering::SeqCst)
        };
        // SeqCst: the load half of the handshake.
        if free && self.admission.load().waiters() > 0 && !cfg!(connpool_mutant = "duty_not_passed")
        {
            self.admission.nudge_back();
        }
        handed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn waiters_that_leave_unserved_do_not_pile_up_in_line() {
        let adm = Admission::<u32>::new();
        // A hundred thousand waiters come and leave (cancelled, timed out) while a few stay;
        // nothing is ever handed over, so nothing pops the line.
        let stay: Vec<_> = (0..10).map(|_| Queued::new(&adm, None)).collect();
        for _ in 0..100_000 {
            let mut q = Queued::new(&adm, None);
            assert!(q.leave().is_none());
        }
        let len = adm.line().slots.len();
        assert!(
            len <= 2 * stay.len() + 64,
            "the line holds {len} slots for 10 waiters"
        );
        assert_eq!(adm.waiters(), 10);
        // The ones that stayed are still in line, in order: hand-offs reach them.
        for _ in 0..10 {
            assert!(adm.hand_off(Token::Slot).is_ok());
        }
        assert!(adm.hand_off(Token::Slot).is_err(), "nobody else is waiting");
        for q in &stay {
            assert_eq!(q.wake(), Wake::Handed);
        }
    }

    #[test]
    fn a_wait_reuses_a_spare_slot() {
        let adm = Admission::<u32>::new();
        let first = {
            let q = Queued::new(&adm, None);
            Arc::as_ptr(q.slot.as_ref().unwrap())
        };
        // Its line entry still holds the slot until a pop or a compaction drops it; a hand-off
        // with nobody waiting pops it.
        assert!(adm.hand_off(Token::Slot).is_err());
        let q = Queued::new(&adm, None);
        assert_eq!(
            Arc::as_ptr(q.slot.as_ref().unwrap()),
            first,
            "the slot was reused"
        );
    }
}
