//! Resource limits and device rules of RUN steps through cgroups: one cgroup
//! per step and controller, under `imgbuild/` beside the builder's own
//! cgroup, joined by stage 1 before anything forks, removed after the step.
//!
//! The hierarchy is picked per controller from `/proc/self/mountinfo`: a
//! cgroup v1 mount that has the controller, else the cgroup2 mount when its
//! `cgroup.controllers` lists it (hybrid hosts have both). v1 is what the
//! tests on the development machine prove; the v2 file names and formats
//! (`pids.max`, `memory.max`, `cpu.max`, `cgroup.subtree_control`) follow
//! the kernel's `Documentation/admin-guide/cgroup-v2.rst` and are not
//! exercised there. v2 has no devices files (its device rules are eBPF
//! programs): where no v1 devices controller exists the sandbox mounts its
//! writable filesystems `nodev` instead, which equally keeps a created
//! device node from being opened.
//!
//! Leftovers of a killed build (empty cgroups whose builder is gone) are
//! removed by the next build that probes the hierarchies.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits of one RUN step (docker's `--pids-limit`, `--memory`,
/// `--cpu-quota`/`--cpu-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Maximum number of tasks; `None`: unlimited.
    pub pids: Option<u64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU time per period, in microseconds.
    pub cpu_quota: Option<u64>,
    /// The period, in microseconds (docker's default 100000).
    pub cpu_period: Option<u64>,
}

/// The default pids limit of a RUN step: podman's (`containers.conf`
/// `pids_limit`). Enough for `make -j` on any machine this runs on (each
/// compiler job is a few tasks), small enough to stop a fork bomb long
/// before the host's `pid_max`.
pub const DEFAULT_PIDS: u64 = 2048;

/// docker's default CFS period.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// runc's default device rules (`libcontainer/specconv.AllowedDevices`, as
/// docker uses them): any device node may be created (`m`), only these
/// opened.
pub const DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",   // /dev/null
    "c 1:5 rwm",   // /dev/zero
    "c 1:7 rwm",   // /dev/full
    "c 1:8 rwm",   // /dev/random
    "c 1:9 rwm",   // /dev/urandom
    "c 5:0 rwm",   // /dev/tty
    "c 5:1 rwm",   // /dev/console
    "c 5:2 rwm",   // /dev/ptmx
    "c 136:* rwm", // /dev/pts/*
];

/// Which cgroup version a controller lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A v1 hierarchy of its own (`/sys/fs/cgroup/pids`).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Where one controller's cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// `pids`, `devices`, `memory` or `cpu`.
    pub controller: &'static str,
    /// v1 or v2.
    pub version: Version,
    /// The builder's own cgroup in it (the parent of `imgbuild/`).
    pub own: PathBuf,
}

/// A cgroup failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A limit was asked for that needs a controller this host does not
    /// offer us.
    #[error("{flag} needs the {controller} cgroup controller, which cannot be used here ({why})")]
    Unavailable {
        /// The option.
        flag: &'static str,
        /// The controller.
        controller: &'static str,
        /// Why (not mounted, not delegated to this user).
        why: String,
    },
    /// Writing a cgroup file failed.
    #[error("cgroup {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The controllers found for this process.
#[derive(Debug, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    /// `PID.STARTTIME`, naming this builder's cgroups.
    prefix: String,
    next: AtomicU64,
}

/// The cgroups of one step, removed on drop.
#[derive(Debug, Default)]
pub struct Step {
    /// The directories stage 1 joins.
    pub dirs: Vec<PathBuf>,
}

impl Drop for Step {
    #[allow(clippy::disallowed_methods)] // matched on the errno, which fs_err's wrapper hides
    fn drop(&mut self) {
        for d in &self.dirs {
            // The step's processes are gone by now; a task still being
            // reaped makes rmdir EBUSY for a moment.
            for _ in 0..50 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// What a step gets where a controller is missing.
#[derive(Debug, Default)]
pub struct Setup {
    /// The cgroups to join.
    pub step: Step,
    /// `RLIMIT_NPROC` instead of a pids cgroup.
    pub nproc: Option<u64>,
    /// `nodev` mounts instead of a devices cgroup.
    pub nodev: bool,
    /// Why a controller could not be used (one warning per build).
    pub fallback: Option<String>,
}

/// The hierarchies in a `mountinfo` text for the controllers we use, given
/// the `/proc/self/cgroup` text and the cgroup2 mount's controllers (read
/// by `v2_controllers`).
pub fn hierarchies(
    mountinfo: &str,
    proc_cgroup: &str,
    v2_controllers: &dyn Fn(&Path) -> String,
) -> Vec<Hierarchy> {
    let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(mp), Some(fstype)) = (fields.get(4), r.first()) else {
            continue;
        };
        match *fstype {
            "cgroup" => {
                let opts = r.get(2).copied().unwrap_or("");
                v1.push((
                    PathBuf::from(unescape(mp)),
                    opts.split(',').map(str::to_string).collect(),
                ));
            }
            "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(unescape(mp))),
            _ => {}
        }
    }
    let own = |key: &str| -> Option<String> {
        proc_cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if key.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == key)
            };
            hit.then(|| path.to_string())
        })
    };
    let mut out = Vec::new();
    for controller in ["pids", "devices", "memory", "cpu"] {
        if let Some((mp, _)) = v1.iter().find(|(_, o)| o.iter().any(|c| c == controller)) {
            if let Some(path) = own(controller) {
                out.push(Hierarchy {
                    controller,
                    version: Version::V1,
                    own: mp.join(path.trim_start_matches('/')),
                });
            }
            continue;
        }
        if let (Some(mp), Some(path)) = (&v2, own("")) {
            let own = mp.join(path.trim_start_matches('/'));
            // Controllers the parent hands down; devices has no v2 files.
            if controller != "devices"
                && v2_controllers(mp)
                    .split_whitespace()
                    .any(|c| c == controller)
            {
                out.push(Hierarchy {
                    controller,
                    version: Version::V2,
                    own,
                });
            }
        }
    }
    out
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/PID/stat`'s start time (field 22), naming a process uniquely.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count after the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[allow(clippy::disallowed_methods)] // the error names the path already
fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Cgroups {
    /// This process's hierarchies; removes what killed builds left.
    pub fn probe() -> Cgroups {
        let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs_err::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hierarchies = hierarchies(&mountinfo, &own, &|mp| {
            fs_err::read_to_string(mp.join("cgroup.controllers")).unwrap_or_default()
        });
        let pid = std::process::id();
        let c = Cgroups {
            prefix: format!("{pid}.{}", start_time(pid).unwrap_or(0)),
            hierarchies,
            next: AtomicU64::new(0),
        };
        c.reclaim();
        c
    }

    /// The hierarchies found.
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// Removes the empty cgroups of builders that are gone.
    fn reclaim(&self) {
        for h in &self.hierarchies {
            let Ok(rd) = fs_err::read_dir(h.own.join("imgbuild")) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let mut f = name.split('.');
                let (Some(pid), Some(start)) = (
                    f.next().and_then(|p| p.parse::<u32>().ok()),
                    f.next().and_then(|s| s.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                if start_time(pid) != Some(start) {
                    let _ = fs_err::remove_dir(e.path());
                }
            }
        }
    }

    fn find(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.controller == controller)
    }

    /// Makes the cgroups of one step for `limits`. A pids or devices
    /// controller that cannot be used falls back (to `RLIMIT_NPROC`, to
    /// `nodev` mounts) and says why in [`Setup::fallback`]; memory and cpu
    /// limits have no fallback.
    ///
    /// # Errors
    /// `--memory` or `--cpu-quota` without a usable controller; a limit the
    /// kernel refuses.
    pub fn create(&self, limits: &Limits) -> Result<Setup, Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{n}", self.prefix);
        let mut setup = Setup::default();
        let mut why = Vec::new();
        let mut wanted: Vec<(&'static str, Option<&'static str>)> = vec![("devices", None)];
        if limits.pids.is_some() {
            wanted.push(("pids", None));
        }
        if limits.memory.is_some() {
            wanted.push(("memory", Some("--memory")));
        }
        if limits.cpu_quota.is_some() {
            wanted.push(("cpu", Some("--cpu-quota")));
        }
        for (controller, flag) in wanted {
            let made = match self.find(controller) {
                Some(h) => self.make(h, &name, limits).map_err(|e| match e {
                    Error::Write { path, source } => format!("{}: {source}", path.display()),
                    other => other.to_string(),
                }),
                None => Err("not mounted".into()),
            };
            match (made, flag) {
                (Ok(dir), _) => setup.step.dirs.push(dir),
                (Err(e), Some(flag)) => {
                    return Err(Error::Unavailable {
                        flag,
                        controller,
                        why: e,
                    });
                }
                (Err(e), None) => {
                    match controller {
                        "pids" => setup.nproc = limits.pids,
                        _ => setup.nodev = true,
                    }
                    why.push(format!("{controller}: {e}"));
                }
            }
        }
        if !why.is_empty() {
            setup.fallback = Some(why.join("; "));
        }
        Ok(setup)
    }

    /// Creates and configures one cgroup; removes it again on failure.
    fn make(&self, h: &Hierarchy, name: &str, limits: &Limits) -> Result<PathBuf, Error> {
        let parent = h.own.join("imgbuild");
        #[allow(clippy::disallowed_methods)] // the error names the path already
        let mk = |p: &Path| match std::fs::create_dir(p) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::Write {
                path: p.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        };
        if h.version == Version::V2 {
            // cgroup-v2.rst, "Enabling and Disabling": a controller reaches
            // a child only through its parent's subtree_control; the
            // builder's own cgroup must then hold no processes of its own
            // ("no internal process" rule) unless it is the root.
            let enable = format!("+{}", h.controller);
            write(&h.own.join("cgroup.subtree_control"), &enable)?;
            mk(&parent)?;
            write(&parent.join("cgroup.subtree_control"), &enable)?;
        } else {
            mk(&parent)?;
        }
        let dir = parent.join(name);
        mk(&dir)?;
        let r = configure(h, &dir, limits);
        if r.is_err() {
            let _ = fs_err::remove_dir(&dir);
        }
        r.map(|()| dir)
    }
}

fn configure(h: &Hierarchy, dir: &Path, limits: &Limits) -> Result<(), Error> {
    let v1 = h.version == Version::V1;
    match h.controller {
        "devices" => {
            write(&dir.join("devices.deny"), "a")?;
            for rule in DEVICE_RULES {
                write(&dir.join("devices.allow"), rule)?;
            }
        }
        "pids" => {
            let max = limits
                .pids
                .map_or_else(|| "max".to_string(), |n| n.to_string());
            write(&dir.join("pids.max"), &max)?;
        }
        "memory" => {
            if let Some(m) = limits.memory {
                let file = if v1 {
                    "memory.limit_in_bytes"
                } else {
                    "memory.max"
                };
                write(&dir.join(file), &m.to_string())?;
            }
        }
        "cpu" => {
            if let Some(q) = limits.cpu_quota {
                let period = limits.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
                if v1 {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                } else {
                    write(&dir.join("cpu.max"), &format!("{q} {period}"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// docker's `--memory` syntax: a number with an optional `b`, `k`, `m` or
/// `g` suffix (binary units).
///
/// # Errors
/// Anything else.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    parse_size(s)
        .ok()
        .filter(|n| *n >= 6 << 20)
        .ok_or_else(|| format!("invalid memory limit `{s}` (a size like 512m or 2g, at least 6m)"))
}

/// A size as docker writes one: bytes, or with a `b`, `k`, `m` or `g`
/// suffix (`--shm-size`).
///
/// # Errors
/// Anything else.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'b')) => (&t[..i], 1u64),
        Some((i, 'k')) => (&t[..i], 1 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid size `{s}` (a size like 64m or 1g)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
35 31 0:30 / /sys/fs/cgroup/pids rw shared:14 - cgroup cgroup rw,pids
36 31 0:31 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/devices rw shared:16 - cgroup cgroup rw,devices
38 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw shared:17 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn a_hybrid_host_uses_v1_for_every_controller_it_has() {
        let own = "5:devices:/\n4:memory:/job/1\n8:pids:/\n1:cpu,cpuacct:/\n0::/\n";
        let h = hierarchies(HYBRID, own, &|_| "hugetlb".into());
        let by = |c: &str| h.iter().find(|x| x.controller == c).unwrap();
        assert_eq!(by("pids").own, Path::new("/sys/fs/cgroup/pids"));
        assert_eq!(by("memory").own, Path::new("/sys/fs/cgroup/memory/job/1"));
        assert_eq!(by("cpu").own, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(h.iter().all(|x| x.version == Version::V1));
    }

    #[test]
    fn a_unified_host_uses_v2_for_what_it_delegates_and_has_no_devices_files() {
        let mi = "32 31 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/user.slice/user-1000.slice/session-1.scope\n";
        let h = hierarchies(mi, own, &|_| "cpuset cpu io memory pids".into());
        let names: Vec<_> = h.iter().map(|x| x.controller).collect();
        assert_eq!(names, ["pids", "memory", "cpu"]);
        assert_eq!(
            h[0].own,
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-1.scope")
        );
        assert!(h.iter().all(|x| x.version == Version::V2));
    }

    #[test]
    fn without_controllers_the_pids_limit_becomes_an_rlimit_and_devices_nodev() {
        let c = Cgroups::default();
        let s = c
            .create(&Limits {
                pids: Some(100),
                ..Default::default()
            })
            .unwrap();
        assert!(s.step.dirs.is_empty());
        assert_eq!(s.nproc, Some(100));
        assert!(s.nodev);
        assert!(s.fallback.unwrap().contains("pids: not mounted"));
        let e = c
            .create(&Limits {
                memory: Some(64 << 20),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--memory needs the memory cgroup controller"),
            "{e}"
        );
    }

    #[test]
    fn memory_sizes_parse_like_dockers() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("104857600"), Ok(104857600));
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
