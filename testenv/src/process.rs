//! Processes: how they relate to the process that starts them, how they are stopped, and
//! free ports for them. The one place in the workspace that sends SIGTERM and SIGKILL; the
//! control plane, the node, the tests' operator and the benchmark's all stop through it.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

/// How the processes relate to the launching process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed with the launching process (tests). Uses `PR_SET_PDEATHSIG`.
    Attached,
    /// Own session, outlives the launcher (`make cluster`); stop with [`crate::stop_detached`].
    Detached,
}

/// Makes `cmd` start with `lifetime`.
pub(crate) fn set_lifetime(cmd: &mut Command, lifetime: Lifetime) {
    use std::os::unix::process::CommandExt;
    match lifetime {
        Lifetime::Attached => unsafe {
            cmd.pre_exec(|| {
                // SAFETY: async-signal-safe syscall between fork and exec.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        },
        Lifetime::Detached => {
            cmd.process_group(0);
        }
    }
}

/// What [`stop`] signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The child alone.
    Process,
    /// The child's process group (a child started with `process_group(0)`), so that a
    /// wrapper's children (a profiler's, for instance) stop with it.
    Group,
}

/// SIGTERM, then SIGKILL once `grace` has passed without the child exiting; reaps it.
/// `Duration::MAX` waits as long as it takes.
pub fn stop(child: &mut Child, target: Target, grace: Duration) {
    let pid = child.id() as i32;
    let signalled = if target == Target::Group { -pid } else { pid };
    terminate(signalled, grace, || matches!(child.try_wait(), Ok(Some(_))));
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then SIGKILL after `grace`, to a process that may not be our child.
pub(crate) fn stop_pid(pid: i32, grace: Duration) {
    terminate(pid, grace, || !alive(pid));
}

/// SIGTERM to `pid` (a negative one is a group), then SIGKILL unless `exited` holds within
/// `grace`.
fn terminate(pid: i32, grace: Duration, mut exited: impl FnMut() -> bool) {
    // SAFETY: plain signals to a process we started; a stale pid simply fails with ESRCH.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now().checked_add(grace);
    while !exited() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// True while `pid` runs. A zombie (our own child, not reaped yet) still answers kill(0) but
/// has ended.
fn alive(pid: i32) -> bool {
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')));
    // SAFETY: signal 0 only checks that the process exists.
    !zombie && unsafe { libc::kill(pid, 0) == 0 }
}

/// `N` distinct free ports on 127.0.0.1.
pub fn free_ports<const N: usize>() -> [u16; N] {
    free_ports_on("127.0.0.1")
}

/// `N` distinct free ports on `ip`.
pub(crate) fn free_ports_on<const N: usize>(ip: &str) -> [u16; N] {
    // Hold every listener until all ports are chosen so that they differ.
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind((ip, 0)).expect("bind a free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}
