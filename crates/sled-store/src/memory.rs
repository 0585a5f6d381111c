//! Memory a thread freed, handed back to the system.

/// glibc keeps memory freed by a thread in that thread's arena, where another thread's
/// allocations do not reuse it: after dropping something large that one thread built (the
/// store's page table, a room's download), hand the freed memory back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}
