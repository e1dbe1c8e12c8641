//! What the bench commands share: a scratch directory removed when dropped, and this process's
//! resident memory.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A scratch directory under the system's temporary directory, removed on drop.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory named `latentdb-{what}-{pid}-{nanos}`.
    pub(crate) fn new(what: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p =
            std::env::temp_dir().join(format!("latentdb-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(ScratchDir(p))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A line of this process's `/proc/self/status` in bytes (`VmHWM`, `VmRSS`), if known.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub(crate) fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Resident memory of this process now, in bytes (Linux `VmRSS`), if known.
pub(crate) fn rss() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// CPU time this process has used so far, all its threads together, in seconds
/// (`CLOCK_PROCESS_CPUTIME_ID`; threads that have ended still count). `None` where it cannot
/// be read (on systems other than Linux with glibc).
pub(crate) fn process_cpu_s() -> Option<f64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to
        // the local above, alive and exclusively borrowed for the call; it reads nothing else.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Wall and CPU seconds spent in timed sections, added up section by section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spent {
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// CPU seconds of the whole process over the same sections (`None` once a section's could
    /// not be read).
    pub cpu_s: Option<f64>,
}

impl Default for Spent {
    /// Nothing spent yet.
    fn default() -> Self {
        Spent {
            wall_s: 0.0,
            cpu_s: Some(0.0),
        }
    }
}

impl Spent {
    /// Runs `f`, adding its wall time and the process's CPU time over it.
    pub(crate) fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let cpu = process_cpu_s();
        let started = std::time::Instant::now();
        let out = f();
        self.wall_s += started.elapsed().as_secs_f64();
        let spent = cpu.zip(process_cpu_s()).map(|(a, b)| b - a);
        self.cpu_s = self.cpu_s.zip(spent).map(|(sum, s)| sum + s);
        out
    }

    /// CPU microseconds per item over `n` items.
    pub(crate) fn cpu_us_per(&self, n: usize) -> Option<f64> {
        self.cpu_s.map(|c| c * 1e6 / n.max(1) as f64)
    }

    /// Cores kept busy on average: CPU seconds over wall seconds.
    pub(crate) fn cores_busy(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.wall_s > 0.0)
            .map(|c| c / self.wall_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_adds_up_the_sections_it_timed() {
        let spin = |ms: u64| {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            let mut x = 0u64;
            while std::time::Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            x
        };
        let mut t = Spent::default();
        t.time(|| spin(20));
        let after_one = t;
        t.time(|| spin(20));
        assert!(t.wall_s >= 0.04, "wall {}", t.wall_s);
        assert!(t.wall_s > after_one.wall_s);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            // Spinning is CPU time (the process's: other tests may add to it, never take away).
            let (one, two) = (after_one.cpu_s.unwrap(), t.cpu_s.unwrap());
            assert!(one > 0.0 && two > one, "cpu {one} then {two}");
        }
    }

    #[test]
    fn spent_rates_come_from_its_sums() {
        let t = Spent {
            wall_s: 2.0,
            cpu_s: Some(3.0),
        };
        assert!((t.cores_busy().unwrap() - 1.5).abs() < 1e-12);
        assert!((t.cpu_us_per(1_000_000).unwrap() - 3.0).abs() < 1e-12);
        let unknown = Spent { cpu_s: None, ..t };
        assert_eq!(unknown.cores_busy(), None);
        assert_eq!(unknown.cpu_us_per(10), None);
        assert_eq!(Spent::default().cores_busy(), None);
    }
}
