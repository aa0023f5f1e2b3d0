//! The state of a kernel-time measurement (`timing.rs`): while one is active, every compute pass
//! this crate records takes a begin and an end timestamp from its query set.

use std::sync::Mutex;

/// Timestamps per measurement (two per pass).
pub(crate) const CAPACITY: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// An active measurement: the query set and the next free index.
pub(crate) struct Session {
    pub(crate) query_set: wgpu::QuerySet,
    pub(crate) next: u32,
    pub(crate) overflow: bool,
}

/// `Some((query set, begin index))` for the next pass, if a measurement is active.
pub(crate) fn next_pass(slot: &Mutex<Option<Session>>) -> Option<(wgpu::QuerySet, u32)> {
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    let s = guard.as_mut()?;
    if s.next + 2 > CAPACITY {
        s.overflow = true;
        return None;
    }
    s.next += 2;
    Some((s.query_set.clone(), s.next - 2))
}

