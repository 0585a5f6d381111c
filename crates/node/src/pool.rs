//! The rayon pool every batch of keys is spread over.

/// Decoding, encryption and decryption run on rayon's pool, one thread per core, at a lower
/// scheduling priority than the rest of the process: the cores stay fully used, but when the Node
/// main thread (the event loop, which builds and sends the requests), the reader, or the
/// homeserver on the same machine needs one, the pool's work waits instead of them.
pub(crate) fn start_crypto_pool() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        // An error means the global pool exists already: it then keeps its settings.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("key-crypto-{i}"))
            .start_handler(|_| lower_this_threads_priority())
            .build_global();
    });
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // On Linux a nice value belongs to the thread (PRIO_PROCESS with the thread's ID).
    // SAFETY: plain system calls on the calling thread; failure leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}
