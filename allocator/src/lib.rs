//! The global allocator of the `tollgate` binary: mimalloc, asked for
//! alignment only when a plain allocation would not already have it.
//!
//! The `mimalloc` crate hands every request to `mi_malloc_aligned`. For a
//! block whose size is not a power of two, mimalloc's aligned path
//! over-allocates whenever the size's page has no free block at hand (the
//! very case its plain path refills the page in): a 48-byte box lands in a
//! 64-byte block through a slow path, and the size's own page is never
//! refilled by these calls. Every block mimalloc hands out is aligned to 8
//! bytes (its size classes are whole words), so a request whose alignment
//! is at most 8 and at most its size takes the plain calls; anything else
//! (16-byte alignment, cache-line-aligned runtime structures) keeps the
//! aligned ones. The rule is the standard library's for the system
//! allocator, with mimalloc's word as the guaranteed alignment.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has.
const PLAIN_ALIGN: usize = 8;

/// mimalloc, with plain calls where they already satisfy the layout.
#[derive(Debug, Default, Clone, Copy)]
pub struct MiMalloc;

/// Whether a plain mimalloc call returns memory aligned for `align`, for a
/// block of `size` bytes.
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// A block for `layout` from `plain_call` (size) where a plain block is
/// aligned enough, else from `aligned_call` (size, alignment).
#[inline]
#[allow(unsafe_code)]
unsafe fn block(
    layout: Layout,
    plain_call: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: mimalloc's allocation calls take any size (and, the aligned
    // ones, a power-of-two alignment, which a `Layout` always has).
    unsafe {
        if plain(layout.align(), layout.size()) {
            plain_call(layout.size()).cast()
        } else {
            aligned_call(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY (for the impl as a whole): each method forwards to the mimalloc
// function for the same operation. A plain call is made only when `plain`
// holds, where mimalloc's 8-byte block alignment satisfies the layout; the
// aligned calls take the layout's alignment. Blocks from either are freed
// with `mi_free`, which takes both.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { block(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; the new block must suit the layout's
        // alignment at its new size.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few pages with every alignment up to a page, by
    /// the allocator itself (the test binary runs on the system's): each
    /// block is aligned, holds what was written, keeps it through growing
    /// and shrinking, and comes back zeroed when asked.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_writable_and_keep_their_bytes() {
        let a = MiMalloc;
        let sizes = (1..=96).chain([100, 127, 128, 160, 192, 255, 256, 1000, 1024, 4096, 10_000, 70_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a nonzero size; each block is used within its
                // size and freed once, with its layout.
                unsafe {
                    let zeroed = a.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} / {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0), "{size} / {align}");
                    a.dealloc(zeroed, layout);

                    let p = a.alloc(layout);
                    assert_eq!(p as usize % align, 0, "{size} / {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown = Layout::from_size_align(size * 3 + 5, align).unwrap();
                    let q = a.realloc(p, layout, grown.size());
                    assert_eq!(q as usize % align, 0, "grown {size} / {align}");
                    assert!((0..size).all(|i| *q.add(i) == (i % 251) as u8), "grown {size} / {align}");
                    let shrunk = Layout::from_size_align((size / 2).max(1), align).unwrap();
                    let r = a.realloc(q, grown, shrunk.size());
                    assert_eq!(r as usize % align, 0, "shrunk {size} / {align}");
                    assert!((0..shrunk.size()).all(|i| *r.add(i) == (i % 251) as u8), "shrunk {size} / {align}");
                    a.dealloc(r, shrunk);
                }
            }
        }
    }

    #[test]
    fn plain_calls_only_where_a_word_aligned_block_suffices() {
        assert!(plain(8, 8) && plain(8, 48) && plain(1, 1) && plain(4, 24));
        assert!(!plain(16, 48) && !plain(64, 64) && !plain(8, 4) && !plain(2, 1));
    }
}
