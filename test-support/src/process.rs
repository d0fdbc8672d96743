//! What a running process costs, from `/proc`: resident memory (now and at its peak) and CPU
//! time. Starting and stopping processes is [`testenv::process`]'s.

const KIB_PER_MIB: f64 = 1024.0;

/// Resident memory now (`VmRSS`) in MiB; 0 once the process is gone.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / KIB_PER_MIB
}

/// The peak resident memory (`VmHWM`) in MiB; 0 once the process is gone.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") / KIB_PER_MIB
}

/// User and system CPU seconds the process has used (`/proc/PID/stat` fields 14 and 15, in
/// the kernel's clock ticks); 0 once the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    cpu_seconds_in(&stat, clock_ticks_per_second())
}

/// A `/proc/PID/status` field given in kB.
fn status_kib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_in(&status, key)
}

fn kib_in(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn cpu_seconds_in(stat: &str, ticks_per_second: f64) -> f64 {
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) is 11, stime (15) is 12.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / ticks_per_second
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_cpu_fields() {
        let status = "Name:\tgdto\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kib_in(status, "VmHWM:"), 20480.0);
        assert_eq!(kib_in(status, "VmRSS:"), 10240.0);
        assert_eq!(kib_in(status, "VmSwap:"), 0.0);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(cpu_seconds_in(stat, 100.0), 3.0);
        assert_eq!(cpu_seconds_in("", 100.0), 0.0);
    }

    #[test]
    fn this_process_has_memory_and_time() {
        let me = std::process::id();
        // The peak is read after the current size: it is a high-water mark, so it can only
        // have grown since (other test threads allocate meanwhile).
        let rss = rss_mib(me);
        let peak = peak_rss_mib(me);
        assert!(rss > 0.0 && peak >= rss, "rss {rss} MiB, peak {peak} MiB");
        assert!(cpu_seconds(me) >= 0.0);
        assert!(clock_ticks_per_second() > 0.0);
    }
}
