//! The pipeline cache's state: one compute pipeline per [`Kernel`] variant and one bind group
//! layout per binding list, each in a slot filled on first use (by `pipeline.rs`, which compiles).
//!
//! Lookups take a read lock; a miss inserts a per-variant slot (an async mutex) under a short
//! write lock and compiles holding only that slot, so two callers that race for the same variant
//! compile it once (the second waits for the first, without blocking a thread on the async
//! path), and variants for different keys compile in parallel. A failed compilation leaves the
//! slot empty, so the next call tries again (a failure may be transient, e.g. out of memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::lock::Mutex;

use crate::kernels::{Binding, Kernel};

pub(crate) type Slot<T> = Arc<Mutex<Option<T>>>;
pub(crate) type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// Compiled pipelines and bind group layouts, keyed by variant (layouts by their bindings).
#[derive(Default)]
pub(crate) struct PipelineCache {
    pub(crate) pipelines: RwLock<HashMap<Kernel, Slot<Arc<wgpu::ComputePipeline>>>>,
    pub(crate) layouts: RwLock<HashMap<&'static [Binding], Slot<Layouts>>>,
    pub(crate) compiled: AtomicUsize,
}

/// The once-cell of `key`, inserted if absent.
pub(crate) fn slot<K: std::hash::Hash + Eq + Copy, T>(map: &RwLock<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return s.clone();
    }
    map.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone()
}

impl PipelineCache {
    /// How many pipelines this cache has compiled.
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }
}
