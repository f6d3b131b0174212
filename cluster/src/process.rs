//! One real child process under the harness's control (`ManagedProcess`):
//! spawned with a scrubbed environment and its stdout+stderr appended to a log
//! file (one marker line per start), killed by the kernel if the harness dies,
//! and faulted with real signals. Also where the harness finds binaries and
//! free loopback ports. What the process *is* (replica, router, launcher) is
//! the business of its wrapper (`cluster::ReplicaProc`, `router_proc::RouterProc`).
//!
//! Every wait has a deadline and polls; nothing sleeps to synchronize.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable naming the directory that holds the binaries.
pub const BIN_DIR_ENV: &str = "CELLKV_BIN_DIR";
/// Poll period of every wait: short next to Raft's timings (100 ms heartbeats),
/// long enough not to load a 2-core machine.
pub(crate) const POLL: Duration = Duration::from_millis(25);
/// Environment variables cellkv processes read that must come only from the
/// harness (config file, explicit `env`), never leak in from the caller's shell.
pub const SCRUBBED_ENV: [&str; 11] = [
    "CELLKV_CONFIG",
    "CELLKV_ROUTER_CONFIG",
    "CELLKV_CONTROL_CONFIG",
    "CELLKV_CLUSTER_SECRET",
    "CELLKV_API_TOKEN",
    "CELLKV_ADMIN_TOKEN",
    "CELLKV_CONTROL_TOKEN",
    "CELLKV_CELL_ADMIN_TOKEN",
    "CELLKV_CONTROL_URL",
    "CELLKV_FAILPOINT",
    "RUST_LOG",
];
/// Deadline for every thread of a process to stop after SIGSTOP (a thread
/// in uninterruptible sleep, e.g. an fsync, stops only when that returns).
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll period while waiting for a SIGSTOP to take effect.
pub(crate) const FREEZE_POLL: Duration = Duration::from_millis(1);
/// Log lines printed by `Drop` when the owning thread panics.
const DROP_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------
// Ports and binaries

/// Ports handed out by this process, so two callers never get the same one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
/// Listen ports are picked from here up to the kernel's ephemeral range.
pub(crate) const LOW_PORT: u16 = 10_000;

/// The kernel's range for outgoing connections' local ports.
pub(crate) fn ephemeral_port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

fn try_claim(port: u16) -> bool {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    if handed.contains(&port) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    handed.insert(port);
    true
}

/// A loopback TCP port that is free now and was not handed out before by this
/// process.
///
/// Ports are taken *below* the kernel's ephemeral range when it leaves room
/// (the usual case): a process that is killed and restarted must bind the same
/// port again, and a port from the ephemeral range could meanwhile have become
/// the local end of some outgoing connection. Falls back to binding port 0.
pub fn free_port() -> std::io::Result<u16> {
    let (eph_lo, _) = ephemeral_port_range();
    if eph_lo > LOW_PORT + 1000 {
        let span = u64::from(eph_lo - LOW_PORT);
        // Start at a per-process pseudo-random point so concurrent test
        // processes rarely probe the same ports.
        let mut x = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        for _ in 0..500 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = LOW_PORT + (x % span) as u16;
            if try_claim(port) {
                return Ok(port);
            }
        }
    }
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free loopback port found"))
}

/// Directory of the built binaries: `$CELLKV_BIN_DIR`, else the profile dir of
/// the running executable (`<target>/release` for both `<target>/release/deps/<test>`
/// and `<target>/release/<bin>`).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("find the running executable")?;
    let mut dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .with_context(|| format!("{} has no parent directory", dir.display()))?;
    }
    Ok(dir.to_owned())
}

/// Path of binary `name`, checked to exist.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --release --bins`) or set {BIN_DIR_ENV}",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------------------
// One process

/// How to run a process; fixed for every run of a [`ManagedProcess`].
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Names the process in log markers, errors and failure output
    /// (`"cell 2 node 1"`, `"router"`).
    pub label: String,
    pub bin: PathBuf,
    pub args: Vec<OsString>,
    /// Working directory.
    pub dir: PathBuf,
    /// stdout and stderr of every run are appended here.
    pub log_path: PathBuf,
    /// Environment of every run, set after [`SCRUBBED_ENV`] is removed.
    pub env: Vec<(String, String)>,
}

/// Writes `config` to `dir/config.toml` and describes the server that runs
/// `bin --config dir/config.toml` in `dir`, every run's output appended to
/// `dir/<log_name>`, with `RUST_LOG=rust_log`, plain (uncoloured) logs, then
/// `env`. Returns the config's path and the process, not started.
pub fn configured_server(
    label: String,
    bin: &Path,
    dir: &Path,
    config: &str,
    log_name: &str,
    rust_log: &str,
    env: &[(String, String)],
) -> Result<(PathBuf, ManagedProcess)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("write {}", config_path.display()))?;
    let mut all_env = vec![
        ("RUST_LOG".to_owned(), rust_log.to_owned()),
        // Plain logs: they are read by people and grepped by tests.
        ("NO_COLOR".to_owned(), "1".to_owned()),
    ];
    all_env.extend(env.iter().cloned());
    let process = ManagedProcess::new(ProcessSpec {
        label,
        bin: bin.to_owned(),
        args: vec!["--config".into(), config_path.clone().into()],
        dir: dir.to_owned(),
        log_path: dir.join(log_name),
        env: all_env,
    });
    Ok((config_path, process))
}

/// A server the harness runs from a generated config and reaches at one
/// listen address (the router, the control server): what `RouterProc` and
/// `ControlProc` share. It derefs to its [`ManagedProcess`].
pub struct ServerProc {
    listen: std::net::SocketAddr,
    dir: PathBuf,
    config_path: PathBuf,
    shutdown_grace: Duration,
    process: ManagedProcess,
}

impl ServerProc {
    pub fn new(
        process: ManagedProcess,
        listen: std::net::SocketAddr,
        dir: &Path,
        config_path: PathBuf,
        shutdown_grace: Duration,
    ) -> ServerProc {
        ServerProc {
            listen,
            dir: dir.to_owned(),
            config_path,
            shutdown_grace,
            process,
        }
    }

    /// The process itself (also reachable through `Deref`).
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// `http://<listen addr>`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configured drain deadline on SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
}

impl std::ops::Deref for ServerProc {
    type Target = ManagedProcess;

    fn deref(&self) -> &ManagedProcess {
        &self.process
    }
}

struct ProcState {
    child: Option<Child>,
    /// Exit status of the last run, once reaped.
    last_exit: Option<ExitStatus>,
    starts: u32,
    /// Length of the log file when the current run started.
    log_offset: u64,
    /// The caller asked for (or is waiting for) this run's exit, so it is no crash.
    exit_expected: bool,
}

/// A child process that can be started, faulted and restarted any number of
/// times with the same command line, directory and log.
///
/// Methods take `&self` (the child sits behind a std mutex held only briefly,
/// never across an await) so a harness can fault a process while other tasks
/// use it. Dropping it SIGKILLs a running child, printing the log tail first
/// when the thread is panicking.
pub struct ManagedProcess {
    spec: ProcessSpec,
    state: Mutex<ProcState>,
}

impl ManagedProcess {
    /// A process that is not started yet.
    pub fn new(spec: ProcessSpec) -> ManagedProcess {
        ManagedProcess {
            spec,
            state: Mutex::new(ProcState {
                child: None,
                last_exit: None,
                starts: 0,
                log_offset: 0,
                exit_expected: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ProcState> {
        // A panic while holding it leaves the state usable: recover it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn label(&self) -> &str {
        &self.spec.label
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Starts the process (again: same command line, directory and log).
    pub fn start(&self) -> Result<()> {
        self.start_with_env(&[])
    }

    /// Same as [`start`](Self::start); reads better after a kill.
    pub fn restart(&self) -> Result<()> {
        self.start_with_env(&[])
    }

    /// Starts the process with `extra` environment for this run only
    /// (e.g. `CELLKV_FAILPOINT=abort_after_ack`).
    pub fn start_with_env(&self, extra: &[(&str, &str)]) -> Result<()> {
        let spec = &self.spec;
        let mut st = self.lock();
        if let Some(child) = st.child.as_mut() {
            match child.try_wait() {
                Ok(None) => bail!("{} is already running", spec.label),
                Ok(Some(status)) => {
                    st.last_exit = Some(status);
                    st.child = None;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("check whether {} runs", spec.label))
                }
            }
        }
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .with_context(|| format!("open {}", spec.log_path.display()))?;
        let offset = log.seek(SeekFrom::End(0))?;
        let extra_desc: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            log,
            "==== harness: start #{} of {} {}====",
            st.starts + 1,
            spec.label,
            if extra.is_empty() {
                String::new()
            } else {
                format!("with {} ", extra_desc.join(" "))
            },
        )?;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(&spec.args)
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", spec.bin.display()))?;
        st.child = Some(child);
        st.last_exit = None;
        st.starts += 1;
        st.log_offset = offset;
        st.exit_expected = false;
        Ok(())
    }

    /// SIGKILL and reap. Returns the exit status (also when it had already exited).
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut st = self.lock();
        match st.child.take() {
            Some(mut child) => {
                // Fails only if it was already reaped, which `take` rules out.
                let _ = child.kill();
                let status = child
                    .wait()
                    .with_context(|| format!("reap the killed {}", self.spec.label))?;
                st.last_exit = Some(status);
                Ok(status)
            }
            None => st
                .last_exit
                .ok_or_else(|| anyhow!("{} was never started", self.spec.label)),
        }
    }

    /// SIGTERM, then wait up to `timeout` for a graceful exit. If it is still
    /// running then, SIGKILLs it and fails.
    pub async fn terminate(&self, timeout: Duration) -> Result<ExitStatus> {
        self.send_term()?;
        self.finish_terminate(timeout).await
    }

    /// SIGTERM without waiting: the exit that follows is expected, no crash.
    /// Pair with [`finish_terminate`](Self::finish_terminate) to stop several
    /// processes in parallel.
    pub fn send_term(&self) -> Result<()> {
        self.lock().exit_expected = true;
        match self.signal(libc::SIGTERM) {
            // It exited by itself meanwhile: `finish_terminate` reports how.
            Err(_) if self.exit_status().ok().flatten().is_some() => Ok(()),
            r => r,
        }
    }

    /// Waits up to `timeout` for the exit a SIGTERM asked for; SIGKILLs the
    /// process and fails if it is still running then.
    pub async fn finish_terminate(&self, timeout: Duration) -> Result<ExitStatus> {
        match self.wait_exit(timeout).await {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = self.kill();
                Err(e.context(format!("{} ignored SIGTERM; killed it", self.spec.label)))
            }
        }
    }

    /// Freezes the process (SIGSTOP): it holds its ports but answers nothing.
    /// Returns once every thread is stopped: kill(2) only queues the signal,
    /// and until one thread of the target gets a CPU to act on it the others
    /// keep running (on a busy machine, long enough to answer requests).
    pub fn stop_signal(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.spec.label))?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            match all_threads_stopped(pid) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("read the state of {}", self.spec.label))
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not stop within {FREEZE_TIMEOUT:?} of SIGSTOP",
                    self.spec.label
                );
            }
            // A blocking sleep: this is a test harness call, over in milliseconds.
            std::thread::sleep(FREEZE_POLL);
        }
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn cont(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Sends `sig` to the running process.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let mut st = self.lock();
        let Some(child) = st.child.as_mut() else {
            bail!("{} is not running", self.spec.label);
        };
        if let Some(status) = child.try_wait()? {
            st.child = None;
            st.last_exit = Some(status);
            bail!("{} already exited ({status})", self.spec.label);
        }
        send_signal(child.id(), sig)
            .with_context(|| format!("send signal {sig} to {}", self.spec.label))
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        let mut st = self.lock();
        if let Some(child) = st.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                st.child = None;
                st.last_exit = Some(status);
            } else {
                return Ok(None);
            }
        }
        Ok(st.last_exit)
    }

    /// True while the process runs (a frozen one counts as running).
    pub fn is_running(&self) -> bool {
        let mut st = self.lock();
        match st.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                st.child = None;
                st.last_exit = Some(status);
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Reaps a process that exited on its own since it was last checked: a
    /// crash nobody asked for. Each exit is reported once.
    pub fn unexpected_exit(&self) -> Option<ExitStatus> {
        let mut st = self.lock();
        if st.exit_expected {
            return None;
        }
        let status = st.child.as_mut()?.try_wait().ok()??;
        st.child = None;
        st.last_exit = Some(status);
        Some(status)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        self.lock().exit_expected = true;
        loop {
            {
                let mut st = self.lock();
                let Some(child) = st.child.as_mut() else {
                    return st
                        .last_exit
                        .ok_or_else(|| anyhow!("{} was never started", self.spec.label));
                };
                if let Some(status) = child.try_wait()? {
                    st.child = None;
                    st.last_exit = Some(status);
                    return Ok(status);
                }
            }
            if Instant::now() >= deadline {
                self.lock().exit_expected = false;
                bail!("{} still running after {timeout:?}", self.spec.label);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The pid of the running (or exited but not yet reaped) child.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.lock().starts
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// The whole log of every run (lossy UTF-8; empty if there is none yet).
    pub fn log(&self) -> String {
        std::fs::read(&self.spec.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log written since the current (or last) run started.
    pub fn log_since_start(&self) -> String {
        let offset = self.lock().log_offset;
        let mut out = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.spec.log_path) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut out);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines at ERROR level (tracing's fmt layout: `<time> ERROR <msg>`).
    pub fn error_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        let running = self.lock().child.is_some();
        if std::thread::panicking() {
            eprintln!(
                "---- {} ({}; log {}) last {DROP_TAIL_LINES} lines ----\n{}\n---- end {} ----",
                self.spec.label,
                if running { "running" } else { "not running" },
                self.spec.log_path.display(),
                self.log_tail(DROP_TAIL_LINES),
                self.spec.label,
            );
        }
        if running {
            let _ = self.kill();
        }
    }
}

/// Whether every thread of `pid` is stopped by a signal (state `T` in
/// `/proc/<pid>/task/<tid>/stat`).
pub(crate) fn all_threads_stopped(pid: u32) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = match std::fs::read_to_string(entry?.path().join("stat")) {
            Ok(s) => s,
            // A thread that exited meanwhile is no running thread.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if stat_state(&stat) != Some('T') {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The state letter of a `/proc/.../stat` line. It follows the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
pub(crate) fn stat_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// Sends `sig` to `pid`.
pub(crate) fn send_signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) only takes integers. Callers pass the pid of a child they
    // have not reaped yet (checked under the state lock), so it names the
    // process they mean.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Makes the kernel SIGKILL the child when the thread that spawned it exits,
/// so children die with a harness that is itself killed (Drop never runs
/// then). Spawn from a thread that outlives the child: a test's main thread,
/// a runtime worker, not a short-lived `spawn_blocking` thread.
///
/// Also puts the child in a process group of its own: a terminal's Ctrl-C
/// reaches only the harness, which then stops its children in order, rather
/// than every child at once behind the harness's back.
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe syscalls (setpgid, prctl, getppid); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let (eph_lo, _) = ephemeral_port_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            if eph_lo > LOW_PORT + 1000 {
                assert!((LOW_PORT..eph_lo).contains(&p), "{p}");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }

    #[test]
    fn reads_the_state_from_proc_stat() {
        assert_eq!(stat_state("42 (cellkv-cell) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) b) (c) T 1 42"), Some('T'));
        assert_eq!(stat_state("garbage"), None);
        let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(stat_state(&me), Some('R'));
    }

    /// A shell script that logs its arguments and environment, then sleeps.
    fn script(dir: &Path) -> PathBuf {
        let script = dir.join("fake");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"args $* env ${RUST_LOG:-none} ${CELLKV_API_TOKEN:-scrubbed} ${EXTRA:-}\"\nexec sleep 30\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&script, perm).unwrap();
        script
    }

    async fn must_log(p: &ManagedProcess, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.log_since_start().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in the log of this run: {}",
                p.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    #[tokio::test]
    async fn runs_signals_and_reports_exits() {
        let dir = tempfile::tempdir().unwrap();
        let p = ManagedProcess::new(ProcessSpec {
            label: "fake thing".into(),
            bin: script(dir.path()),
            args: vec!["--config".into(), "x.toml".into()],
            dir: dir.path().to_owned(),
            log_path: dir.path().join("logs/fake.log"),
            env: vec![("RUST_LOG".into(), "debug".into())],
        });
        assert!(p.pid().is_none());
        assert!(p.kill().is_err(), "never started");
        p.start().unwrap();
        assert!(p.pid().is_some());
        // The caller's CELLKV_API_TOKEN would be scrubbed; the spec's RUST_LOG is set.
        must_log(&p, "args --config x.toml env debug scrubbed").await;
        assert!(p.unexpected_exit().is_none());
        // An exit nobody asked for is reported once.
        p.signal(libc::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = p.unexpected_exit() {
                break s;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(POLL).await;
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(p.unexpected_exit().is_none());
        assert_eq!(p.exit_status().unwrap(), Some(status));

        // SIGSTOP returns once the process is stopped; SIGCONT resumes it.
        p.start().unwrap();
        must_log(&p, "scrubbed \n").await;
        p.stop_signal().unwrap();
        assert!(all_threads_stopped(p.pid().unwrap()).unwrap());
        p.cont().unwrap();
        p.kill().unwrap();

        // A SIGTERM asked for is no crash.
        p.start_with_env(&[("EXTRA", "e1")]).unwrap();
        // (The marker line names EXTRA=e1 too: wait for the script's own line.)
        must_log(&p, "scrubbed e1").await;
        p.send_term().unwrap();
        let status = p.finish_terminate(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(p.unexpected_exit().is_none());
        assert!(p.signal(libc::SIGTERM).is_err(), "not running");
        assert_eq!(p.starts(), 3);
        assert!(p.log().contains("start #3 of fake thing with EXTRA=e1"));
        assert!(p.log_since_start().contains("e1"));
        assert!(!p.log_since_start().contains("start #1"));
        assert_eq!(p.log_tail(1), "args --config x.toml env debug scrubbed e1");
    }
}
