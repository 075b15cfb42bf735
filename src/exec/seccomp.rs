//! Docker's default seccomp profile (`seccomp/docker-default.json`, built
//! in; provenance and license in `seccomp/NOTICE`), turned into a BPF
//! program with libseccomp — the library runc uses for the same profile.
//!
//! [`rules`] is moby's `setupSeccomp` (`profiles/seccomp/seccomp_linux.go`):
//! the blocks whose `includes`/`excludes` (architecture, capabilities of the
//! container, minimum kernel) apply on this host. [`compile`] is runc's
//! `libcontainer/seccomp/patchbpf`-free path: the native architecture plus
//! the profile's sub-architectures (x86 and x32 on x86_64), every rule added
//! as runc adds it, and the program exported, once per build, to a file
//! stage 2 loads (`exec::sys::load_seccomp`) right before the final
//! capability sets and exec.

use std::path::Path;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

/// The profile, as shipped by Docker.
pub const DOCKER_DEFAULT: &str = include_str!("seccomp/docker-default.json");

/// The capabilities of a RUN step (the container's bounding set, which is
/// what moby checks `includes.caps` against), by profile name.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A profile that cannot be turned into a filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The JSON is not a seccomp profile.
    #[error("seccomp profile: {0}")]
    Profile(#[from] serde_json::Error),
    /// A name the profile uses that this builder does not know.
    #[error("seccomp profile: unknown {what} `{name}`")]
    Unknown {
        /// Action, operator or architecture.
        what: &'static str,
        /// As written.
        name: String,
    },
    /// libseccomp refused a rule or the export.
    #[error("seccomp: {what}")]
    Libseccomp {
        /// What was being done.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The program could not be written.
    #[error("seccomp: writing {path}")]
    Write {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Block>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Block {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A condition on a syscall argument.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Argument index.
    pub index: u32,
    /// The value (the mask, for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The masked value to compare with.
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: String,
}

/// One rule of the filter for this host: these syscalls get `action` (when
/// the arguments match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Syscall names.
    pub names: Vec<String>,
    /// `SCMP_ACT_*`.
    pub action: String,
    /// The errno for `SCMP_ACT_ERRNO`.
    pub errno: Option<u32>,
    /// Conditions on arguments.
    pub args: Vec<Arg>,
}

/// The host a filter is made for.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    /// The architecture, in moby's (libseccomp's) names: `amd64`, `arm64`.
    pub arch: &'a str,
    /// The container's capabilities.
    pub caps: &'a [&'a str],
    /// The kernel's `major.minor`.
    pub kernel: (u32, u32),
}

impl Host<'static> {
    /// This machine, with a RUN step's capabilities.
    pub fn this() -> Host<'static> {
        let release = rustix::system::uname();
        Host {
            arch: native_arch(),
            caps: CAPABILITIES,
            kernel: parse_kernel(&release.release().to_string_lossy()).unwrap_or((0, 0)),
        }
    }
}

/// moby's `goToNative` for the architectures Rust names.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "mips64" => "mips64",
        other => other,
    }
}

/// moby's `archMap` key for a native architecture name.
fn scmp_arch(native: &str) -> Option<&'static str> {
    Some(match native {
        "amd64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "arm64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "s390x" => "SCMP_ARCH_S390X",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "mips64" => "SCMP_ARCH_MIPS64",
        _ => return None,
    })
}

/// `6.1.0-18-amd64` → `(6, 1)`.
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it
        .next()
        .and_then(|m| {
            m.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Some((major, minor))
}

/// The default action, the architectures to add besides the native one, and
/// the rules that apply to `host` (moby's `setupSeccomp`).
///
/// # Errors
/// JSON that is not a profile.
pub fn rules(profile: &str, host: &Host<'_>) -> Result<(Rule, Vec<String>, Vec<Rule>), Error> {
    let p: Profile = serde_json::from_str(profile)?;
    let default = Rule {
        names: Vec::new(),
        action: p.default_action,
        errno: p.default_errno_ret,
        args: Vec::new(),
    };
    let arches = scmp_arch(host.arch)
        .and_then(|native| p.arch_map.iter().find(|a| a.architecture == native))
        .map(|a| a.sub_architectures.clone())
        .unwrap_or_default();
    let at_least = |v: &Option<String>| {
        v.as_deref()
            .and_then(parse_kernel)
            .map(|want| host.kernel >= want)
    };
    let mut out = Vec::new();
    for b in p.syscalls {
        let ex = &b.excludes;
        if ex.arches.iter().any(|a| a == host.arch)
            || ex.caps.iter().any(|c| host.caps.contains(&c.as_str()))
            || at_least(&ex.min_kernel) == Some(true)
        {
            continue;
        }
        let inc = &b.includes;
        if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch))
            || !inc.caps.iter().all(|c| host.caps.contains(&c.as_str()))
            || at_least(&inc.min_kernel) == Some(false)
        {
            continue;
        }
        let mut names = b.names;
        names.extend(b.name);
        out.push(Rule {
            names,
            action: b.action,
            errno: b.errno_ret,
            args: b.args.unwrap_or_default(),
        });
    }
    Ok((default, arches, out))
}

fn action(r: &Rule) -> Result<ScmpAction, Error> {
    let errno = r.errno.map(|e| e as i32);
    Ok(match r.action.as_str() {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.unwrap_or(libc::EPERM)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(errno.unwrap_or(libc::EPERM) as u16),
        "SCMP_ACT_LOG" => ScmpAction::Log,
        other => {
            return Err(Error::Unknown {
                what: "action",
                name: other.into(),
            });
        }
    })
}

fn compare(a: &Arg) -> Result<ScmpArgCompare, Error> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                a.index,
                ScmpCompareOp::MaskedEqual(a.value),
                a.value_two,
            ));
        }
        other => {
            return Err(Error::Unknown {
                what: "operator",
                name: other.into(),
            });
        }
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// What the program compiled from `profile` for `host` depends on, as a
/// hex digest: the profile, the host's architecture, capabilities and
/// kernel, and libseccomp's version. Compiling takes 20–90 ms here, so the
/// program is kept in the store under this name and reused by later builds.
pub fn cache_key(profile: &str, host: &Host<'_>) -> String {
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let text = format!(
        "imgbuild-seccomp-2\0{profile}\0{}\0{}\0{}.{}\0{v}",
        host.arch,
        host.caps.join(","),
        host.kernel.0,
        host.kernel.1
    );
    crate::digest::Digest::of(text.as_bytes()).hex()
}

/// Compiles `profile` for this host into a BPF program written to `out`
/// (which must not exist).
///
/// # Errors
/// A profile libseccomp refuses, or `out` not writable.
pub fn compile(profile: &str, host: &Host<'_>, out: &Path) -> Result<(), Error> {
    let lib = |what: String| move |source| Error::Libseccomp { what, source };
    let (default, arches, rules) = rules(profile, host)?;
    let default_action = action(&default)?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(lib("creating a filter".into()))?;
    // The filter is loaded by stage 2 itself, with CAP_SYS_ADMIN and no
    // no_new_privs (docker's default), not by seccomp_load.
    ctx.set_ctl_nnp(false).map_err(lib("no_new_privs".into()))?;
    // A binary tree of syscall numbers instead of a linear list: the kernel
    // runs the program once per syscall number and architecture when it is
    // loaded (to find the always-allowed ones), so with ~400 rules a linear
    // program costs each RUN step about a millisecond and a half to load.
    ctx.set_ctl_optimize(2)
        .map_err(lib("binary-tree optimization".into()))?;
    for a in &arches {
        let arch: ScmpArch = a.parse().map_err(|_| Error::Unknown {
            what: "architecture",
            name: a.clone(),
        })?;
        ctx.add_arch(arch).map_err(lib(format!("adding {a}")))?;
    }
    for r in &rules {
        let act = action(r)?;
        // libseccomp refuses a rule that repeats the default (runc skips it).
        if act == default_action {
            continue;
        }
        // runc's matchCall: conditions on an argument that appears more than
        // once are separate rules (any of them), the rest are all required.
        let mut counts = [0usize; 6];
        for a in &r.args {
            if let Some(c) = counts.get_mut(a.index as usize) {
                *c += 1;
            }
        }
        let mut together = Vec::new();
        let mut alone = Vec::new();
        for a in &r.args {
            let c = compare(a)?;
            if counts.get(a.index as usize).copied().unwrap_or(0) > 1 {
                alone.push(c);
            } else {
                together.push(c);
            }
        }
        for name in &r.names {
            // A syscall this libseccomp does not know is skipped, as runc does.
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let what = || format!("rule for {name}");
            if r.args.is_empty() {
                ctx.add_rule(act, call).map_err(lib(what()))?;
            }
            for c in &alone {
                let mut conds = together.clone();
                conds.push(*c);
                ctx.add_rule_conditional(act, call, &conds)
                    .map_err(lib(what()))?;
            }
            if alone.is_empty() && !together.is_empty() {
                ctx.add_rule_conditional(act, call, &together)
                    .map_err(lib(what()))?;
            }
        }
    }
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        })?;
    ctx.export_bpf(&file)
        .map_err(lib("exporting the program".into()))?;
    file.sync_all().map_err(|source| Error::Write {
        path: out.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kernel: (u32, u32)) -> Host<'static> {
        Host {
            arch: "amd64",
            caps: CAPABILITIES,
            kernel,
        }
    }

    fn action_for(rules: &[Rule], name: &str) -> Vec<(String, Option<u32>, usize)> {
        rules
            .iter()
            .filter(|r| r.names.iter().any(|n| n == name))
            .map(|r| (r.action.clone(), r.errno, r.args.len()))
            .collect()
    }

    #[test]
    fn dockers_conditions_apply_as_moby_applies_them() {
        let (default, arches, rules) = rules(DOCKER_DEFAULT, &host((6, 1))).unwrap();
        assert_eq!(default.action, "SCMP_ACT_ERRNO");
        assert_eq!(arches, ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
        // Denied by default: no rule allows them without CAP_SYS_ADMIN.
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "pivot_root",
            "bpf",
            "init_module",
            "kexec_load",
        ] {
            assert!(
                action_for(&rules, denied).is_empty(),
                "{denied}: {:?}",
                action_for(&rules, denied)
            );
        }
        // clone3 is ENOSYS (so that glibc falls back to clone, which the
        // profile can filter); ptrace is allowed from 4.8 on.
        assert_eq!(
            action_for(&rules, "clone3"),
            [("SCMP_ACT_ERRNO".into(), Some(38), 0)]
        );
        assert_eq!(
            action_for(&rules, "ptrace"),
            [("SCMP_ACT_ALLOW".into(), None, 0)]
        );
        let (_, _, old) = super::rules(DOCKER_DEFAULT, &host((4, 4))).unwrap();
        assert!(action_for(&old, "ptrace").is_empty());
        // clone only without namespace flags (the amd64 block, argument 0).
        assert_eq!(
            action_for(&rules, "clone"),
            [("SCMP_ACT_ALLOW".into(), None, 1)]
        );
        // With CAP_SYS_ADMIN the admin syscalls would be allowed.
        let admin = Host {
            caps: &["CAP_SYS_ADMIN"],
            ..host((6, 1))
        };
        let (_, _, rules) = super::rules(DOCKER_DEFAULT, &admin).unwrap();
        assert!(!action_for(&rules, "mount").is_empty());
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5.10.0-28-amd64"), Some((5, 10)));
    }

    #[test]
    fn the_profile_compiles_to_a_program_without_root() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bpf");
        compile(DOCKER_DEFAULT, &Host::this(), &out).unwrap();
        let len = fs_err::metadata(&out).unwrap().len();
        assert!(len > 800 && len % 8 == 0, "{len}");
        // Never over an existing file.
        assert!(compile(DOCKER_DEFAULT, &Host::this(), &out).is_err());
        // The cache name follows every input.
        let h = Host::this();
        let k = cache_key(DOCKER_DEFAULT, &h);
        assert_eq!(k, cache_key(DOCKER_DEFAULT, &h));
        assert_ne!(
            k,
            cache_key(
                DOCKER_DEFAULT,
                &Host {
                    kernel: (4, 4),
                    ..h.clone()
                }
            )
        );
        assert_ne!(k, cache_key("{}", &h));
    }
}
