//! The two glibc allocator calls elior needs (`mallinfo2` and `malloc_trim`), behind safe functions.
//!
//! elior forbids unsafe code, and no maintained crate wraps these. They take no pointers
//! and glibc serialises them with every other allocator call (they are MT-Safe), so the
//! only unsafety is the FFI itself. Elsewhere than on glibc they do nothing.
#![deny(unsafe_op_in_unsafe_fn)]

/// Bytes the program has allocated and not freed (`mallinfo2`: in the arenas, and in
/// chunks mapped on their own). `None` where the allocator is not glibc's.
pub fn in_use_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and reads the arenas under their locks.
        let info = unsafe { libc::mallinfo2() };
        Some(info.uordblks + info.hblkhd)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Gives every whole free page of every arena back to the system (`malloc_trim(0)`);
/// true if any was. glibc's `free` does so by itself only at the top of a heap.
pub fn release_free() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers; it changes only glibc's own free lists,
        // under the arenas' locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory freed between live allocations (where glibc's `free` cannot give it back
    /// by itself) is no longer counted as in use, and `release_free` gives some of it
    /// back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn memory_freed_between_live_allocations_is_counted_and_released() {
        let blocks: Vec<Vec<u8>> = (0..512).map(|_| vec![1u8; 16 << 10]).collect();
        let in_use = in_use_bytes().unwrap();
        assert!(
            in_use >= 8 << 20,
            "{in_use} bytes in use with 8 MiB allocated"
        );
        // Every other block: 4 MiB in 16 KiB holes between the blocks that stay.
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
        let left = in_use_bytes().unwrap();
        assert!(
            left + (3 << 20) <= in_use,
            "in use {in_use} -> {left} bytes"
        );
        assert!(release_free(), "malloc_trim gave nothing back");
        assert_eq!(kept.len(), 256);
    }
}
