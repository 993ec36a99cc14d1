//! The swap and disk step: warnings with numbers, never a change. Under 1 GiB of memory
//! with no swap, the OOM killer picks a container at the first spike; under 5 GiB free on
//! the stack's filesystem, images and backups fill it.
//!
//! Pure: the judgement.

use serde::Serialize;

use super::{Step, StepPlan};

pub const MIN_MEMORY: u64 = 1 << 30;
pub const MIN_FREE: u64 = 5 << 30;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Have {
    pub memory_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    /// The filesystem of the stack directory (or its nearest existing parent).
    pub data_path: String,
    pub free_bytes: Option<u64>,
}

/// Bytes as `1.5 GiB` / `512 MiB`.
pub fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// `MemTotal` and `SwapTotal` of /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.trim();
            rest.trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        })
    };
    (field("MemTotal:"), field("SwapTotal:"))
}

pub fn plan(have: &Have) -> StepPlan {
    let want = serde_json::json!({
        "memory_or_swap": format!("at least {} of memory, or some swap", human(MIN_MEMORY)),
        "free": format!("at least {} free on the stack's filesystem", human(MIN_FREE)),
    });
    let mut plan = StepPlan::new(Step::Capacity, want, have);
    if let (Some(memory), Some(0)) = (have.memory_bytes, have.swap_bytes) {
        if memory < MIN_MEMORY {
            plan.warnings.push(format!(
                "memory is {} and there is no swap (under {} the kernel kills a container at the first spike)\nadd swap: fallocate -l 1G /swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile (and a line in /etc/fstab)",
                human(memory),
                human(MIN_MEMORY)
            ));
        }
    }
    if let Some(free) = have.free_bytes {
        if free < MIN_FREE {
            plan.warnings.push(format!(
                "{} has {} free, under {}: images and backups will fill it\nfree space (docker image prune, elior backup prune) or grow the disk",
                have.data_path,
                human(free),
                human(MIN_FREE)
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_with_numbers() {
        let (memory, swap) = parse_meminfo(
            "MemTotal:         512000 kB\nMemFree: 1 kB\nSwapTotal:             0 kB\n",
        );
        assert_eq!((memory, swap), (Some(524_288_000), Some(0)));
        let plan = plan(&Have {
            memory_bytes: memory,
            swap_bytes: swap,
            data_path: "/srv/elior".into(),
            free_bytes: Some(3 << 30),
        });
        assert!(plan.actions.is_empty());
        assert!(
            plan.warnings[0].starts_with("memory is 500 MiB and there is no swap (under 1.0 GiB")
        );
        assert!(plan.warnings[1].starts_with("/srv/elior has 3.0 GiB free, under 5.0 GiB"));
    }

    #[test]
    fn enough_memory_or_swap_is_quiet() {
        let roomy = Have {
            memory_bytes: Some(8 << 30),
            swap_bytes: Some(0),
            data_path: "/".into(),
            free_bytes: Some(50 << 30),
        };
        assert!(plan(&roomy).warnings.is_empty());
        let swapped = Have {
            memory_bytes: Some(512 << 20),
            swap_bytes: Some(1 << 30),
            ..roomy
        };
        assert!(plan(&swapped).warnings.is_empty());
    }
}
