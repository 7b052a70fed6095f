//! `herald render-worker`: the renderer process a node renders tenants'
//! templates in (`herald_api::template::Renderer`), under hard limits.
//!
//! It first asks the kernel to kill it when its parent (the node) dies, so
//! that a node killed outright leaves no renderer burning CPU, then sets its
//! limits, then reads jobs from standard input and answers them on standard
//! output until its input ends. It runs no async runtime and no other
//! thread, so the address space it has at rest is little more than the
//! executable's mappings.

use std::io;

use anyhow::{Context, bail};
use herald_api::template::{MEMORY_LIMIT, PARENT_ENV};
use rustix::process::{
    Resource, Rlimit, Signal, getppid, getrlimit, set_parent_process_death_signal, setrlimit,
};

/// CPU seconds one job may use before the kernel stops the process: a
/// backstop for a render the node can no longer kill (the node itself
/// stopped or stalled); the node's own wall-clock limit is much shorter.
const CPU_BACKSTOP_SECONDS: u64 = 10;

/// Runs the renderer process until its standard input ends.
pub fn run() -> anyhow::Result<()> {
    set_parent_process_death_signal(Some(Signal::KILL))
        .context("asking to be killed when the node dies")?;
    // A node that died before the line above sent no signal: this process
    // already belongs to another parent, so it stops here. Run by hand,
    // without the variable, it has no node to compare with.
    if let Ok(node) = std::env::var(PARENT_ENV) {
        let parent = getppid().map_or(0, |pid| pid.as_raw_nonzero().get());
        if node.parse::<i32>().ok() != Some(parent) {
            bail!("the node that started this renderer (process {node}) has exited");
        }
    }
    // An allocation past this is refused, and Rust aborts the process.
    set(Resource::As, MEMORY_LIMIT).context("limiting the address space")?;
    // An aborted render must not leave the tenant's data in a core file.
    set(Resource::Core, 0).context("turning core files off")?;
    herald_api::template::serve(io::stdin().lock(), io::stdout().lock(), || {
        let used = cpu_seconds()?;
        let limit = Rlimit {
            current: Some(used + CPU_BACKSTOP_SECONDS),
            maximum: getrlimit(Resource::Cpu).maximum,
        };
        setrlimit(Resource::Cpu, limit).map_err(io::Error::from)
    })
    .context("serving render jobs")
}

/// Sets both the soft and the hard limit, so the process cannot raise it.
fn set(resource: Resource, value: u64) -> io::Result<()> {
    let limit = Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    Ok(setrlimit(resource, limit)?)
}

/// The CPU time this process has used (user and system), in whole seconds
/// rounded up, from `/proc/self/stat` (fields 14 and 15, in clock ticks,
/// which Linux fixes at 100 a second for every program).
fn cpu_seconds() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("/proc/self/stat has no CPU times"))
    };
    // Field 3 (the state) is the first after the name: fields 14 and 15 are at 11 and 12.
    Ok((ticks(11)? + ticks(12)?).div_ceil(100))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_cpu_time() {
        // Spins until the count moves (at most a second of CPU, which a busy
        // machine may take many seconds to give), within a generous deadline.
        let before = super::cpu_seconds().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut spin = 0u64;
        while super::cpu_seconds().unwrap() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the CPU time read stayed at {before} s"
            );
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        }
    }
}
