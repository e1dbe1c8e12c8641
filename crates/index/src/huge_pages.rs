//! Large arrays on transparent huge pages: the graph's vectors, codes and layer-0 links.
//!
//! A search reads vectors and link lists at random places of arrays of tens to hundreds of
//! MB; on 4 KiB pages most of those reads also miss the TLB. Linux backs a range with 2 MiB
//! pages when it is advised so (`madvise(MADV_HUGEPAGE)`) before its pages are first
//! touched, which is what transparent huge pages' usual `madvise` mode expects. Two rules
//! follow, and this module keeps both for the arrays that grow:
//! - advise a fresh allocation before anything is written to it;
//! - never grow one with `realloc`: glibc moves a large block with `mremap`, which splits its
//!   huge pages and leaves the grown array on small ones. An array grows instead into a fresh
//!   allocation (advised, then the elements moved over, one `memcpy`), at least doubling, as
//!   `Vec` does.
//!
//! Only the 2 MiB-aligned part inside an allocation can be a huge page, so arrays below
//! [`MIN_BYTES`] are left alone. Elsewhere than Linux, and where huge pages are off, the
//! advice does nothing and the arrays are plain `Vec`s either way: results never depend on
//! it.

use std::collections::TryReserveError;

/// The size of a huge page on x86-64 and aarch64 Linux (with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Arrays smaller than this are not advised: at most a sliver of them could be huge pages.
const MIN_BYTES: usize = 4 << 20;

/// An empty `Vec` with room for exactly `cap` elements, advised onto huge pages when large.
pub(crate) fn with_capacity<T>(cap: usize) -> Result<Vec<T>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(cap)?;
    advise(&v);
    Ok(v)
}

/// `v.try_reserve(additional)`, except that a large array grows into a fresh allocation
/// advised onto huge pages (see the module's notes) instead of being reallocated.
pub(crate) fn try_reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<(), TryReserveError> {
    if v.capacity() - v.len() >= additional {
        return Ok(());
    }
    // An overflowing size: `try_reserve` reports it as the error it is.
    let Some(needed) = v.len().checked_add(additional) else {
        return v.try_reserve(additional);
    };
    let cap = needed.max(v.capacity().saturating_mul(2));
    if cap.saturating_mul(size_of::<T>()) < MIN_BYTES {
        return v.try_reserve(additional);
    }
    let mut fresh = with_capacity(cap)?;
    fresh.append(v);
    *v = fresh;
    Ok(())
}

/// Advises the 2 MiB-aligned part of `v`'s allocation onto huge pages (nothing for a small
/// one). A hint: failure (huge pages disabled, an old kernel) is ignored. Pages already
/// written stay on 4 KiB pages until the kernel's background collapser (`khugepaged`) moves
/// them, which it does over time for advised ranges; pages written afterwards come as huge
/// pages at once.
pub(crate) fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity().saturating_mul(size_of::<T>());
    if bytes < MIN_BYTES {
        return;
    }
    let start = v.as_ptr() as usize;
    let begin = start.next_multiple_of(HUGE_PAGE);
    let end = start.saturating_add(bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= begin {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `[begin, end)` lies inside `v`'s live allocation, which this call neither
    // frees nor remaps. `MADV_HUGEPAGE` only changes how the kernel backs those pages,
    // never their contents or their validity, so no Rust reference can observe it; its
    // return value is a hint's status, not needed.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Growing keeps every element and its order, at least doubles the capacity (so pushes
    /// stay amortised O(1)), and small arrays grow as `Vec` grows them.
    #[test]
    fn growing_keeps_the_elements_in_order() {
        let mut v: Vec<u32> = Vec::new();
        let mut grows = 0;
        for batch in 0..40u32 {
            let before = v.capacity();
            try_reserve(&mut v, 50_000).unwrap();
            assert!(v.capacity() - v.len() >= 50_000);
            if v.capacity() != before {
                grows += 1;
                assert!(v.capacity() >= 2 * before, "{before} -> {}", v.capacity());
            }
            let base = batch * 50_000;
            v.extend(base..base + 50_000);
        }
        assert!(v.capacity() * 4 >= MIN_BYTES && grows < 12, "{grows} grows");
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        // Enough room already: nothing moves.
        let at = v.as_ptr();
        let spare = v.capacity() - v.len();
        try_reserve(&mut v, spare).unwrap();
        assert_eq!(v.as_ptr(), at);
    }

    /// Elements that are not `Copy` (the atomic link words) move over intact.
    #[test]
    fn atomics_move_over_intact() {
        let mut v: Vec<AtomicU32> = (0..1000).map(AtomicU32::new).collect();
        try_reserve(&mut v, MIN_BYTES).unwrap();
        assert!(v.capacity() >= 1000 + MIN_BYTES);
        v.extend((1000..2000).map(AtomicU32::new));
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, x)| x.load(Relaxed) == i as u32)
        );
    }

    /// An impossible size is an error, not an abort; the array is left as it was.
    #[test]
    fn an_impossible_size_is_an_error() {
        let mut v: Vec<u64> = vec![7; 10];
        assert!(try_reserve(&mut v, usize::MAX).is_err());
        assert!(try_reserve(&mut v, usize::MAX / 16).is_err());
        assert!(with_capacity::<u64>(usize::MAX / 4).is_err());
        assert_eq!(v, vec![7; 10]);
    }

    /// A fresh array has exactly the room asked for, large or small.
    #[test]
    fn with_capacity_reserves_exactly() {
        for cap in [0, 10, MIN_BYTES / 4, MIN_BYTES] {
            let v: Vec<f32> = with_capacity(cap).unwrap();
            assert_eq!((v.len(), v.capacity()), (0, cap));
        }
    }
}
