//! Fresh heap pages faulted in on the spare core, just ahead of the allocator.
//!
//! A full-size run touches ~3 GB of fresh memory, and on Linux every first touch of an anonymous
//! page traps into the kernel, which zeroes it (2 MiB at a time under transparent huge pages; in
//! a VM the host backs it too). On the 2-core machine the benchmarks run on, that zeroing was
//! 8–10% of bench-medium's samples, all of it on the one thread that runs the simulation
//! (docs/notes/perf.md, sessions 20 and 22), while the second core idled.
//!
//! At the process's first allocation, [`PrefaultingAlloc`] reserves one large arena for mimalloc
//! (mimalloc allocates from its arenas in the order they were made, so this one serves first)
//! and from then on records the highest address it hands out inside it. [`start`] (called by
//! `fedsim run` and `fedsim sweep`) starts a thread that asks the kernel to fault in the
//! arena's pages (`madvise(MADV_POPULATE_WRITE)`) up to [`MARGIN_BYTES`] past that frontier. So
//! the simulation thread finds its new pages present and the zeroing runs on the other core.
//!
//! Nothing observable changes: `MADV_POPULATE_WRITE` only makes pages present (it never changes
//! their contents, and a page already present is left alone), so it can run concurrently with
//! the program's own use of the same pages; no result depends on where the allocator puts
//! things (tests/prefault.rs compares result files with the helper on and off). Peak resident
//! memory reads higher by the pages faulted in that the allocator had not used yet: the margin
//! and holes below the frontier (44–81 MiB on bench-medium); run-info.json says whether the
//! helper ran. Off with `FEDSIM_PREFAULT=0` (then no arena is reserved either), and a no-op
//! where the kernel lacks `MADV_POPULATE_WRITE` (before Linux 5.14) or on other systems.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The allocator of the `fedsim` binary: mimalloc, noting the highest end of any block it
/// hands out inside the prefaulted arena.
pub struct PrefaultingAlloc;

/// The arena's start and size (both 0 unless [`reserve_arena`] reserved it).
static ARENA_START: AtomicUsize = AtomicUsize::new(0);
static ARENA_SIZE: AtomicUsize = AtomicUsize::new(0);
/// The highest end address of a block handed out inside the arena (0: none yet).
static HIGHEST_END: AtomicUsize = AtomicUsize::new(0);
/// Whether the first allocation has tried to reserve the arena.
static RESERVE_TRIED: AtomicBool = AtomicBool::new(false);

/// How far past the highest block handed out the helper faults pages in.
pub const MARGIN_BYTES: usize = 32 << 20;

/// A transparent huge page on x86_64 and arm64 (4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The helper's step: one `madvise` call faults in this much (two huge pages).
const STEP_BYTES: usize = 4 << 20;

/// The arena's size: address space only (pages cost memory once touched), sized above
/// bench-medium's ~3.2 GB peak; a larger world takes further arenas from the OS as before.
const ARENA_BYTES: usize = 8 << 30;

#[inline(always)]
fn note(block: *mut u8, size: usize) {
    let end = (block as usize).wrapping_add(size);
    // Three relaxed loads per allocation; a store only when the frontier moves.
    if moves_frontier(
        HIGHEST_END.load(Ordering::Relaxed),
        ARENA_START.load(Ordering::Relaxed),
        ARENA_SIZE.load(Ordering::Relaxed),
        end,
    ) {
        HIGHEST_END.fetch_max(end, Ordering::Relaxed);
    }
}

/// Whether a block ending at `end` lies inside the arena `[start, start + size]` above the
/// frontier `highest`. A block of another arena or of the OS (or a null pointer) is outside:
/// below the start the subtraction wraps to a huge value. No arena (size 0) takes nothing.
#[inline(always)]
fn moves_frontier(highest: usize, start: usize, size: usize, end: usize) -> bool {
    end > highest && end.wrapping_sub(start) <= size && size != 0
}

/// Reserves the arena at the process's first allocation (one relaxed load afterwards).
#[inline(always)]
fn reserve_once() {
    if !RESERVE_TRIED.load(Ordering::Relaxed) {
        reserve_arena();
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; `note` only reads the returned address.
unsafe impl GlobalAlloc for PrefaultingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve_once();
        // SAFETY: the caller's contract is mimalloc's.
        let block = unsafe { mimalloc::MiMalloc.alloc(layout) };
        note(block, layout.size());
        block
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve_once();
        // SAFETY: as for `alloc`.
        let block = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        note(block, layout.size());
        block
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.dealloc(block, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let block = unsafe { mimalloc::MiMalloc.realloc(block, layout, new_size) };
        note(block, new_size);
        block
    }
}

// Declared here rather than through libmimalloc-sys's `extended` and `arena` features: two
// functions. These are mimalloc v3's signatures (the `mimalloc` crate's default), where an
// arena ID is a pointer; v2's is an `int`.
#[cfg(target_os = "linux")]
unsafe extern "C" {
    /// mimalloc: reserve `size` bytes of OS memory as an arena (0 on success).
    fn mi_reserve_os_memory_ex(
        size: usize,
        commit: bool,
        allow_large: bool,
        exclusive: bool,
        arena_id: *mut *mut std::ffi::c_void,
    ) -> std::ffi::c_int;
    /// mimalloc: the start and size of an arena.
    fn mi_arena_area(arena_id: *mut std::ffi::c_void, size: *mut usize) -> *mut std::ffi::c_void;
}

/// Reserves the arena, at the process's first allocation: mimalloc searches its arenas in the
/// order they were made, so the arena is used first only if it is made before mimalloc reserves
/// one of its own for the first block. Nothing here allocates (`getenv`, not `std::env`).
#[cold]
fn reserve_arena() {
    if RESERVE_TRIED.swap(true, Ordering::Relaxed) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a NUL-terminated name; the returned string is only read.
        let off = unsafe {
            let value = libc::getenv(c"FEDSIM_PREFAULT".as_ptr());
            !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"0"
        };
        if off {
            return;
        }
        let mut arena_id: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: plain FFI calls with valid out-pointers; mimalloc takes the memory from the
        // OS, not from its heap.
        let (start, size) = unsafe {
            if mi_reserve_os_memory_ex(ARENA_BYTES, true, false, false, &mut arena_id) != 0 {
                return;
            }
            let mut size = 0usize;
            let start = mi_arena_area(arena_id, &mut size) as usize;
            (start, size)
        };
        if start == 0 || size < STEP_BYTES {
            return;
        }
        // Transparent huge pages, as mimalloc asks for its own arenas: fewer TLB misses on a
        // heap touched at random, and one fault per 2 MiB. Only advice: failure changes nothing.
        // SAFETY: the arena just reserved; no byte changes.
        unsafe { libc::madvise(start as *mut libc::c_void, size, libc::MADV_HUGEPAGE) };
        ARENA_START.store(start, Ordering::Relaxed);
        ARENA_SIZE.store(size, Ordering::Relaxed);
    }
}

/// Starts the helper thread that faults the arena in ahead of the allocator, if the arena was
/// reserved (not with `FEDSIM_PREFAULT=0`) and the kernel can (`MADV_POPULATE_WRITE`, Linux
/// 5.14). Returns whether it started. Only worth it where one thread simulates and a core is
/// spare: `fedsim run`.
pub fn start() -> bool {
    start_linux()
}

#[cfg(not(target_os = "linux"))]
fn start_linux() -> bool {
    false
}

/// Whether the helper thread was started (reported in run-info.json: with it, peak resident
/// memory includes up to [`MARGIN_BYTES`] of pages faulted in ahead of use).
pub fn active() -> bool {
    STARTED.load(Ordering::Relaxed)
}

static STARTED: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
fn start_linux() -> bool {
    let arena_start = ARENA_START.load(Ordering::Relaxed);
    let end = arena_start + ARENA_SIZE.load(Ordering::Relaxed);
    if arena_start == 0 {
        return false;
    }
    // From the huge page holding the highest block so far: the arena begins with mimalloc's
    // own bookkeeping (its bitmaps), which it touches as it needs, and what lies below that
    // block is in use already.
    let start = (HIGHEST_END.load(Ordering::Relaxed).max(arena_start) & !(HUGE_PAGE_BYTES - 1))
        .max(arena_start);
    // A kernel without MADV_POPULATE_WRITE says EINVAL (an empty range is checked for nothing
    // else).
    // SAFETY: an empty range at the arena's start; nothing is read or written.
    if unsafe { libc::madvise(start as *mut libc::c_void, 0, libc::MADV_POPULATE_WRITE) } != 0
        || STARTED.swap(true, Ordering::Relaxed)
    {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("prefault".to_owned())
        .spawn(move || populate_ahead(start, end))
        .is_ok();
    if !spawned {
        STARTED.store(false, Ordering::Relaxed);
    }
    spawned
}

/// The helper: keeps the arena's pages faulted in up to [`MARGIN_BYTES`] past the highest block
/// handed out, in [`STEP_BYTES`] steps, sleeping while it is ahead.
#[cfg(target_os = "linux")]
fn populate_ahead(start: usize, end: usize) {
    let mut populated = start;
    loop {
        let want = (HIGHEST_END.load(Ordering::Relaxed).max(start) + MARGIN_BYTES).min(end);
        if populated + STEP_BYTES <= want {
            // SAFETY: a range inside the arena (readable, writable memory mimalloc manages);
            // populating makes its pages present and changes no byte of them.
            let status = unsafe {
                libc::madvise(
                    populated as *mut libc::c_void,
                    STEP_BYTES,
                    libc::MADV_POPULATE_WRITE,
                )
            };
            if status != 0 {
                return;
            }
            populated += STEP_BYTES;
        } else if populated + STEP_BYTES > end {
            return;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::moves_frontier;

    #[test]
    fn only_blocks_inside_the_arena_and_above_the_frontier_move_it() {
        let (start, size) = (0x7f00_0000_0000usize, 8usize << 30);
        let highest = start + (100 << 20);
        // Above the frontier, inside: moves it.
        assert!(moves_frontier(highest, start, size, highest + 64));
        assert!(moves_frontier(highest, start, size, start + size));
        // At or below the frontier: does not.
        assert!(!moves_frontier(highest, start, size, highest));
        assert!(!moves_frontier(highest, start, size, start + 4096));
        // Past the arena's end, or in memory below its start (another arena): does not.
        assert!(!moves_frontier(highest, start, size, start + size + 1));
        assert!(!moves_frontier(highest, start, size, start - 4096));
        // A failed allocation (null pointer, end = size) and no arena at all: do not.
        assert!(!moves_frontier(highest, start, size, 64));
        assert!(!moves_frontier(0, 0, 0, 64));
    }
}
