//! The proxy binary: nutcracker's command line, then the library does the
//! rest. The library forbids unsafe code; the one unsafe call (an allocator
//! setting, through libc) is here.

fn main() -> std::process::ExitCode {
    tune_allocator();
    shardproxy::proxy::cli::main()
}

/// Keeps freed memory for reuse instead of giving it back to the kernel
/// at once. With glibc's defaults, buffers of 128 KiB and more are fresh
/// mappings and a freed heap top over 128 KiB is trimmed, so a stream of
/// 64 KB values faulted in new pages for every request: 2-7 page faults per
/// 64 KB GET, about a third of the proxy's CPU on that case (perf stat;
/// nutcracker, whose buffers come from its own free lists, has none). Up to
/// 4 MiB comes from the heap, and up to 8 MiB of free heap is kept (per
/// glibc arena: one for the main thread, one per worker thread at most).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; it runs
    // first in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}
