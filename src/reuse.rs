//! Per-context reuse of the small objects every call would otherwise create: the uniform blocks
//! of the dispatches (one per distinct parameter block), the staging buffers of downloads and
//! split attention's scratch. All are bounded, and none holds a caller's buffer: a dropped
//! tensor's memory is freed. Bind groups, which do hold the caller's buffers, are kept only in a
//! cache the caller holds ([`BindGroups`], through `Context::with_binding_cache`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Uniform buffers by content (a call repeated with the same shapes and options binds the same
/// one), at most `UNIFORMS` of them, the oldest dropped first. Safe to share between calls and
/// submissions: a uniform buffer is written once, at creation, and only read after.
#[derive(Default)]
pub(crate) struct Uniforms {
    map: Mutex<UniformMap>,
}

/// The buffers by content, and the contents in insertion order (for eviction).
type UniformMap = (HashMap<Vec<u8>, wgpu::Buffer>, VecDeque<Vec<u8>>);

const UNIFORMS: usize = 256;

impl Uniforms {
    pub fn get(&self, bytes: &[u8]) -> Option<wgpu::Buffer> {
        self.map.lock().ok()?.0.get(bytes).cloned()
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.0.len())
    }

    pub fn insert(&self, bytes: &[u8], buffer: &wgpu::Buffer) {
        let Ok(mut guard) = self.map.lock() else { return };
        let (map, order) = &mut *guard;
        if map.insert(bytes.to_vec(), buffer.clone()).is_none() {
            order.push_back(bytes.to_vec());
        }
        while order.len() > UNIFORMS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// Idle staging buffers for downloads, by size class (a power of two from 4 KiB to 16 MiB), at
/// most `PER_CLASS` per class. A buffer is taken out while a download uses it and put back
/// unmapped.
#[derive(Default)]
pub(crate) struct Staging {
    pool: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

const PER_CLASS: usize = 4;
const LARGEST: u64 = 16 << 20;

impl Staging {
    /// The size class of a download of `bytes`, or `None` past the largest pooled size.
    pub fn class(bytes: u64) -> Option<u64> {
        let c = bytes.max(4096).next_power_of_two();
        (c <= LARGEST).then_some(c)
    }

    pub fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        self.pool.lock().ok()?.get_mut(&class)?.pop()
    }

    /// Idle buffers held, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        self.pool.lock().map_or((0, 0), |p| p.iter().fold((0, 0), |(n, b), (c, v)| (n + v.len(), b + c * v.len() as u64)))
    }

    pub fn put(&self, class: u64, buffer: wgpu::Buffer) {
        if let Ok(mut pool) = self.pool.lock() {
            let v = pool.entry(class).or_default();
            if v.len() < PER_CLASS {
                v.push(buffer);
            }
        }
    }
}

/// Scratch buffers for the partial results of split attention, one per size class (a power of
/// two up to 16 MiB), shared by every call of the context. Sharing is safe on wgpu's one queue:
/// a call writes every partial it reads, and its writes and reads are recorded in one command
/// buffer, so commands of other calls never run between them.
#[derive(Default)]
pub(crate) struct Scratch {
    pool: Mutex<HashMap<u64, wgpu::Buffer>>,
}

impl Scratch {
    pub fn get(&self, class: u64) -> Option<wgpu::Buffer> {
        self.pool.lock().ok()?.get(&class).cloned()
    }

    /// Buffers held, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        self.pool.lock().map_or((0, 0), |p| (p.len(), p.values().map(|b| b.size()).sum()))
    }

    pub fn insert(&self, class: u64, buffer: &wgpu::Buffer) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.entry(class).or_insert_with(|| buffer.clone());
        }
    }
}

/// What a bind group binds: the kernel (hence its layout), and each slot's buffer and window
/// (the uniform block included).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pub kernel: crate::kernels::Kernel,
    pub entries: Vec<(u32, wgpu::Buffer, u64, u64)>,
}

/// Bind groups by what they bind, at most `BIND_GROUPS`, the oldest dropped first. Held by a
/// caller's handle on a context (`Context::with_binding_cache`): the bind groups keep their
/// buffers alive until the handle, and every clone of it, is dropped.
#[derive(Default)]
pub(crate) struct BindGroups {
    map: Mutex<(HashMap<BindKey, wgpu::BindGroup>, VecDeque<BindKey>)>,
}

const BIND_GROUPS: usize = 1024;

impl BindGroups {
    pub fn get(&self, key: &BindKey) -> Option<wgpu::BindGroup> {
        self.map.lock().ok()?.0.get(key).cloned()
    }

    pub fn insert(&self, key: BindKey, group: &wgpu::BindGroup) {
        let Ok(mut guard) = self.map.lock() else { return };
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), group.clone()).is_none() {
            order.push_back(key);
        }
        while order.len() > BIND_GROUPS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Bind groups held.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_classes() {
        assert_eq!(Staging::class(1), Some(4096));
        assert_eq!(Staging::class(4097), Some(8192));
        assert_eq!(Staging::class(16 << 20), Some(16 << 20));
        assert_eq!(Staging::class((16 << 20) + 1), None);
    }
}
