//! Gives the heap memory the server no longer uses back to the system.
//!
//! glibc's `free` hands memory back to the kernel only from the top of a heap. What a
//! burst freed between longer-lived allocations stays resident: once 1,024 connections
//! (hyper keeps 16 KiB of buffers for each) had closed, the idle server held 38 to 40 MiB
//! against 28 MiB before them, for good; a server that had just started held 6 MiB of
//! the OpenAPI document it built and dropped. `malloc_trim` returns every whole free page
//! of every arena. The server calls it once it is ready to serve, and then whenever a
//! periodic look finds that the resident memory not in use grew by more than 4 MiB.

use std::time::Duration;

/// How often the heap is looked at. glibc counts it by walking the arenas' free lists
/// under their locks (a fraction of a millisecond): now and then, not on every request.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Resident free heap worth handing back. Below it, the page faults of using the memory
/// again would cost more than keeping it.
const RELEASE_ABOVE: usize = 4 << 20;

/// Hands the free heap back to the system now (startup: the garbage of building the
/// app), then looks at the heap every 5 s for as long as the runtime runs, and releases
/// what is free again when the resident memory not in use has grown by more than 4 MiB
/// since the last release.
pub fn spawn() {
    heap_release::release_free();
    let Some(mut floor) = idle_resident_bytes() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Under the arenas' locks for up to a few milliseconds: not on a worker.
            if let Ok(left) = tokio::task::spawn_blocking(move || release_if_grown(floor)).await {
                floor = left;
            }
        }
    });
}

/// Anonymous memory resident and not in use: mostly glibc's free chunks still mapped
/// (the rest is thread stacks and the runtime's own mappings, a megabyte or two). glibc
/// counts its free bytes whether it has released their pages or not, so the kernel's
/// count of resident pages is the one that tells.
fn idle_resident_bytes() -> Option<usize> {
    let in_use = heap_release::in_use_bytes()?;
    Some(super::process::anonymous_resident_bytes()?.saturating_sub(in_use))
}

fn release_if_grown(floor: usize) -> usize {
    let Some(idle) = idle_resident_bytes() else {
        return floor;
    };
    if idle <= floor + RELEASE_ABOVE {
        return floor.min(idle);
    }
    let started = std::time::Instant::now();
    heap_release::release_free();
    let left = idle_resident_bytes().unwrap_or(idle);
    tracing::debug!(
        idle_mib = idle >> 20,
        left_mib = left >> 20,
        took_us = started.elapsed().as_micros() as u64,
        "gave free heap back to the system"
    );
    left
}
