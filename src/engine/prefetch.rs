//! Cache prefetch hints. A hint changes no value and no order: it only asks the CPU to start
//! loading memory that a later step of the same key fetch will read. The key world visits each
//! of 10^4 domains' state (slot, publisher, memo entries, key objects) about once per simulated
//! day, so every first read of it is a cache miss; issuing the loads one stage early lets them
//! overlap with the signing or checking in between instead of stalling one after another.

/// Asks for the cache line holding `*value` (no effect on other architectures).
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    prefetch_address((value as *const T).cast::<u8>());
}

/// Asks for every cache line of `bytes`' first `max_len` bytes.
#[inline(always)]
pub fn prefetch_bytes(bytes: &[u8], max_len: usize) {
    let len = bytes.len().min(max_len);
    let mut offset = 0;
    while offset < len {
        prefetch_address(bytes[offset..].as_ptr());
        offset += 64;
    }
}

/// Asks for the cache lines of `*value`, which may span several.
#[inline(always)]
pub fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let mut offset = 0;
    while offset < std::mem::size_of::<T>() {
        prefetch_address(start.wrapping_add(offset));
        offset += 64;
    }
}

/// Asks for the reference counts of `value` (just before its bytes), the line a clone or a
/// drop writes.
#[inline(always)]
pub fn prefetch_arc_str(value: &std::sync::Arc<str>) {
    prefetch_address(
        value
            .as_ptr()
            .wrapping_sub(2 * std::mem::size_of::<usize>()),
    );
}

/// Asks for the reference counts and the first bytes of the value behind `value`.
#[inline(always)]
pub fn prefetch_arc<T>(value: &std::sync::Arc<T>) {
    let data = std::sync::Arc::as_ptr(value).cast::<u8>();
    prefetch_address(data.wrapping_sub(2 * std::mem::size_of::<usize>()));
    prefetch_address(data.wrapping_add(std::mem::size_of::<T>().min(64) - 1));
}

#[inline(always)]
fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees; SSE is part of the
    // x86_64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
