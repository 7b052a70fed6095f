//! What the benchmark reads about its own process and the machine from /proc:
//! memory (VmRSS, VmHWM), CPU time per thread name, and a description of the machine.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

/// Resident memory of this process in MiB: `(current VmRSS, peak VmHWM)`.
pub fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Clock ticks per second of /proc's CPU times; 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by each live thread, keyed by thread id, with its name.
fn thread_times() -> BTreeMap<u32, (String, f64)> {
    let mut times = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return times;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The name is in parentheses and may itself hold spaces, so the fields
        // are counted from the last closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based, name = 2).
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            times.insert(tid, (name, (user + system) / TICKS_PER_SECOND));
        }
    }
    times
}

/// The machine's CPU time so far from /proc/stat, in ticks: `[busy, iowait, total]`.
/// It covers every process, so a PostgreSQL server's work shows here too.
fn machine_ticks() -> [u64; 3] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(at).sum();
    let idle = at(3) + at(4);
    [total - idle, at(4), total]
}

/// A mark to measure the CPU used during one phase.
pub struct CpuMark {
    at: Instant,
    threads: BTreeMap<u32, (String, f64)>,
    machine: [u64; 3],
}

impl CpuMark {
    pub fn now() -> CpuMark {
        CpuMark {
            at: Instant::now(),
            threads: thread_times(),
            machine: machine_ticks(),
        }
    }

    /// CPU used since the mark: the whole process as a share of every core,
    /// per thread name (tokio's workers, the SQLite writer, the blocking pool)
    /// in cores, and the whole machine's busy and iowait shares (which include
    /// a PostgreSQL server). Threads that ended during the phase are not counted.
    pub fn since(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, seconds)) in thread_times() {
            let before = self.threads.get(&tid).map_or(0.0, |(_, s)| *s);
            *by_name.entry(name).or_default() += (seconds - before).max(0.0);
        }
        let total: f64 = by_name.values().sum();
        let cores = cores() as f64;
        // Threads that used less than 1% of a core are left out as noise.
        let threads: serde_json::Map<String, Value> = by_name
            .into_iter()
            .filter(|(_, s)| *s / wall >= 0.01)
            .map(|(name, s)| (name, json!(round(s / wall, 2))))
            .collect();
        let machine = machine_ticks();
        let elapsed_ticks = machine[2].saturating_sub(self.machine[2]).max(1) as f64;
        json!({
            "process_share_of_all_cores": round(total / wall / cores, 2),
            "cores_used_by_thread_name": threads,
            "machine_busy_share": round(machine[0].saturating_sub(self.machine[0]) as f64 / elapsed_ticks, 2),
            "machine_iowait_share": round(machine[1].saturating_sub(self.machine[1]) as f64 / elapsed_ticks, 2),
        })
    }
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Rounds to `digits` decimals, for readable JSON.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The machine: core count, kernel, CPU model and memory.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0).round());
    json!({
        "nproc": cores(),
        "kernel": kernel,
        "cpu_model": model,
        "memory_mib": mem_mib,
    })
}

/// The current time as RFC 3339 in UTC, computed from the Unix clock.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
