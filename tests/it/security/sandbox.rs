//! RUN gets at least Docker's default isolation, as root and rootless
//! (issue 10, item 3). Each test runs the real sandbox on a busybox-static
//! base with a small static probe (`tests/fixtures/sandbox/probe.c`, built
//! here with `cc -static`) that makes the system calls a hostile RUN would.
//! The rootless runs go through `setpriv` to uid 1000, as the sandbox tests
//! do (`.ci/run` creates that user and its subordinate ids).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, busybox_base, mounts_under, stderr};

/// Docker's default capability set, as `/proc/self/status` shows it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// Who runs imgbuild.
#[derive(Clone, Copy, Debug, PartialEq)]
enum As {
    Root,
    User,
}

const BOTH: [As; 2] = [As::Root, As::User];

/// A test environment with the busybox base and the probe in `ctx/`.
struct Sandbox {
    env: TestEnv,
    who: As,
    /// Run imgbuild inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

fn chown_tree(p: &Path, uid: u32) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(uid));
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

impl Sandbox {
    fn new(who: As) -> Sandbox {
        let env = TestEnv::new();
        busybox_base(&env);
        let probe = env.path().join("ctx/probe");
        std::fs::create_dir_all(probe.parent().unwrap()).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sandbox/probe.c");
        let out = Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(&probe)
            .arg(&src)
            .output()
            .expect("cc (gcc and libc6-dev, see .ci/run)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = Sandbox {
            env,
            who,
            netns: None,
        };
        if who == As::User {
            // The user's own store, with the base loaded by the user.
            std::fs::remove_dir_all(s.env.store()).unwrap();
            chown_tree(s.env.path(), 1000);
            let tar = s.env.path().join("base/base.tar");
            let out = s.cmd(&["load", tar.to_str().unwrap()]).output().unwrap();
            assert!(out.status.success(), "load: {}", stderr(&out));
        }
        s
    }

    fn path(&self) -> &Path {
        self.env.path()
    }

    /// `imgbuild ARGS` as this sandbox's user, in its network namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if self.who == As::User {
            argv.extend(
                [
                    "setpriv",
                    "--reuid",
                    "1000",
                    "--regid",
                    "1000",
                    "--clear-groups",
                    "--inh-caps=-all",
                ]
                .map(String::from),
            );
        }
        argv.push(env!("CARGO_BIN_EXE_imgbuild").into());
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(self.path())
            .env("IMGBUILD_STORE", self.env.store())
            .env("IMGBUILD_PULL", "never")
            .env("HOME", self.path())
            .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    }

    /// Builds `RUN`s (after `FROM base`, `COPY probe`) with `args`.
    fn build_with(&self, runs: &str, args: &[&str], wrap: impl FnOnce(&mut Command)) -> Output {
        let df = format!("FROM base:latest\nCOPY probe /probe\n{runs}\n");
        std::fs::write(self.path().join("ctx/Dockerfile"), df).unwrap();
        if self.who == As::User {
            chown_tree(&self.path().join("ctx"), 1000);
        }
        let mut all = vec!["build", "--progress=plain", "--no-cache"];
        all.extend_from_slice(args);
        all.push("ctx");
        let mut c = self.cmd(&all);
        wrap(&mut c);
        c.output().unwrap()
    }

    fn build(&self, runs: &str, args: &[&str]) -> Output {
        self.build_with(runs, args, |_| {})
    }

    /// Builds and returns the `R: ` lines the RUN steps printed.
    fn results(&self, runs: &str, args: &[&str]) -> Vec<String> {
        let out = self.build(runs, args);
        let log = stderr(&out);
        assert!(out.status.success(), "{:?}: build failed:\n{log}", self.who);
        results(&log)
    }
}

fn results(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("R: "))
        .map(str::to_string)
        .collect()
}

crate::it_test!(issue_10_descriptors_inherited_from_the_shell_do_not_reach_run);
fn issue_10_descriptors_inherited_from_the_shell_do_not_reach_run() {
    for who in BOTH {
        let s = Sandbox::new(who);
        let host = s.path().join("host-dir");
        std::fs::create_dir_all(&host).unwrap();
        chown_tree(&host, if who == As::User { 1000 } else { 0 });
        // The shell that starts imgbuild holds a descriptor on a host
        // directory (`exec 7<DIR`), which imgbuild inherits.
        let out = s.build_with(
            "RUN echo pwned > /proc/self/fd/7/escaped 2>/dev/null; echo R: fds $(ls /proc/self/fd | tr '\\n' ' ')",
            &[],
            |c| {
                let prog = c.get_program().to_owned();
                let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("exec 7<\"$0\" && exec \"$@\"")
                    .arg(&host)
                    .arg(prog)
                    .args(args)
                    .current_dir(s.path())
                    .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))));
                *c = sh;
            },
        );
        let log = stderr(&out);
        assert!(out.status.success(), "{who:?}: {log}");
        assert!(
            !host.join("escaped").exists(),
            "{who:?}: RUN wrote into the host directory through fd 7"
        );
        // ls itself opens one descriptor for the directory it lists.
        assert_eq!(results(&log), ["fds 0 1 2 3"], "{who:?}: {log}");
    }
}

/// A sysctl's value, restored on drop (the baseline check writes them).
struct Sysctl(&'static str, String);

impl Sysctl {
    fn new(path: &'static str) -> Sysctl {
        Sysctl(path, std::fs::read_to_string(path).unwrap())
    }
    fn now(&self) -> String {
        std::fs::read_to_string(self.0).unwrap()
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if self.now() != self.1 {
            let _ = std::fs::write(self.0, &self.1);
        }
    }
}

crate::it_test!(issue_10_run_cannot_rewrite_host_sysctls);
fn issue_10_run_cannot_rewrite_host_sysctls() {
    let core = Sysctl::new("/proc/sys/kernel/core_pattern");
    let ratio = Sysctl::new("/proc/sys/vm/overcommit_ratio");
    let new_ratio = (ratio.1.trim().parse::<u32>().unwrap() + 7).to_string();
    for who in BOTH {
        let s = Sandbox::new(who);
        let r = s.results(
            &format!(
                "RUN (echo '|/tmp/pwn %p' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo R: core written || echo R: core refused\n\
                 RUN (echo {new_ratio} > /proc/sys/vm/overcommit_ratio) 2>/dev/null && echo R: vm written || echo R: vm refused\n\
                 RUN grep ' /proc/sys ' /proc/mounts | grep -q '[ ,]ro[ ,]' && echo R: read-only"
            ),
            &[],
        );
        assert_eq!(r, ["core refused", "vm refused", "read-only"], "{who:?}");
        assert_eq!(
            core.now(),
            core.1,
            "{who:?}: the host's core_pattern changed"
        );
        assert_eq!(
            ratio.now(),
            ratio.1,
            "{who:?}: the host's vm.overcommit_ratio changed"
        );
    }
}

crate::it_test!(issue_10_run_cannot_see_or_add_to_the_host_keyring);
fn issue_10_run_cannot_see_or_add_to_the_host_keyring() {
    let probe = |s: &Sandbox, args: &[&str]| -> String {
        let out = Command::new(s.path().join("ctx/probe"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let tag = std::process::id();
    let host_key = format!("imgbuild-test-host-{tag}");
    let run_key = format!("imgbuild-test-run-{tag}");
    for who in BOTH {
        let s = Sandbox::new(who);
        // A key in root's user keyring on the host.
        assert!(probe(&s, &["add_key", &host_key]).starts_with("ok"));
        let out = s.build(
            &format!(
                "RUN echo R: keys $(wc -c < /proc/keys)\n\
                 RUN echo R: find $(/probe find_key {host_key})\n\
                 RUN echo R: add $(/probe add_key {run_key})"
            ),
            &[],
        );
        let _ = probe(&s, &["drop_key", &host_key]);
        let leaked = probe(&s, &["drop_key", &run_key]);
        let log = stderr(&out);
        assert!(out.status.success(), "{who:?}: {log}");
        assert_eq!(
            results(&log),
            ["keys 0", "find EPERM", "add EPERM"],
            "{who:?}: {log}"
        );
        assert_ne!(
            leaked, "ok",
            "{who:?}: RUN added a key to the host's keyring"
        );
        let keys = std::fs::read_to_string("/proc/keys").unwrap();
        assert!(!keys.contains(&run_key), "{who:?}: {keys}");
    }
}

crate::it_test!(issue_10_device_nodes_can_be_made_but_not_opened);
fn issue_10_device_nodes_can_be_made_but_not_opened() {
    for who in BOTH {
        let s = Sandbox::new(who);
        let r = s.results(
            "RUN (busybox mknod /blk b 7 0 && echo R: made) 2>/dev/null || echo R: not made; \
                 echo R: open $(/probe open /blk); \
                 (busybox mknod /mem c 1 1) 2>/dev/null; echo R: mem $(/probe open /mem); rm -f /blk /mem",
            &[],
        );
        match who {
            // Docker keeps CAP_MKNOD; the devices cgroup refuses the open.
            As::Root => assert_eq!(r, ["made", "open EPERM", "mem EPERM"], "{who:?}"),
            // A user namespace cannot make device nodes at all.
            As::User => assert_eq!(r, ["not made", "open ENOENT", "mem ENOENT"], "{who:?}"),
        }
    }
}

/// This machine's network interfaces.
fn host_interfaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

crate::it_test!(issue_10_a_raw_socket_sees_only_the_sandboxs_interfaces);
fn issue_10_a_raw_socket_sees_only_the_sandboxs_interfaces() {
    let host = host_interfaces();
    assert!(host.iter().any(|i| i != "lo"), "{host:?}");
    for who in BOTH {
        let s = Sandbox::new(who);
        // Some traffic while the socket listens: loopback inside the sandbox.
        let r = s.results(
            "RUN (/probe connect 127.0.0.1 9 >/dev/null &) ; echo R: $(/probe packet)",
            &[],
        );
        let line = r.first().unwrap_or_else(|| panic!("{who:?}: no result"));
        let (ifaces, seen) = line
            .strip_prefix("ok ifaces ")
            .and_then(|l| l.split_once(" seen"))
            .unwrap_or_else(|| panic!("{who:?}: {line}"));
        assert_eq!(
            ifaces, "lo tap0",
            "{who:?}: CAP_NET_RAW stays, in its own namespace"
        );
        for i in seen.split_whitespace() {
            assert!(
                i == "lo" || i == "tap0",
                "{who:?}: captured from {i}: {line}"
            );
        }
    }
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(marker))
        .count()
}

crate::it_test!(issue_10_a_fork_bomb_is_bounded_by_the_pids_limit);
fn issue_10_a_fork_bomb_is_bounded_by_the_pids_limit() {
    for who in BOTH {
        let s = Sandbox::new(who);
        let marker = format!("bomb-{}-{who:?}", std::process::id());
        // The bomb's processes wait for their children, so it grows until
        // forks fail; after 4 s the step stops it (so that the count
        // barely races with its churn), counts what it sees, and fails.
        let started = Instant::now();
        let out = s.build(
            &format!(
                "RUN sh -c 'sleep 4 & S=$!; bomb() {{ bomb | bomb & wait; }}; (bomb) 2>/dev/null & wait $S; kill -STOP -1; kill -STOP -1; kill -STOP -1; set -- /proc/[0-9]*; echo R: processes $#; exit 1' {marker}"
            ),
            &[],
        );
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{who:?}: {log}");
        assert!(log.contains("exited with code 1"), "{who:?}: {log}");
        assert!(started.elapsed() < Duration::from_secs(90), "{who:?}");
        let r = results(&log);
        let n: usize = r
            .first()
            .and_then(|l| l.strip_prefix("processes "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{who:?}: {log}"));
        // A child forked while `kill -STOP -1` walks the task list escapes
        // that pass (the later passes catch it), and reading /proc races
        // with what is still exiting: a few of slack, where an unbounded
        // bomb reaches thousands.
        assert!((200..=2048 + 8).contains(&n), "{who:?}: {n} processes");
        // Nothing of it is left, nothing mounted.
        let deadline = Instant::now() + Duration::from_secs(20);
        while processes_with(&marker) > 0 {
            assert!(
                Instant::now() < deadline,
                "{who:?}: the bomb outlived its step"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(mounts_under(s.path()).is_empty());
    }
}

crate::it_test!(issue_10_without_a_cgroup_the_pids_limit_is_an_rlimit_with_one_warning);
fn issue_10_without_a_cgroup_the_pids_limit_is_an_rlimit_with_one_warning() {
    let s = Sandbox::new(As::User);
    let out = s.build(
        "RUN echo R: first step\n\
         RUN i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo R: spawned all",
        &["--pids-limit", "64"],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RUN steps get no cgroup"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("RLIMIT_NPROC=64"), "{log}");
    assert!(log.contains("can't fork"), "{log}");
    assert_eq!(results(&log), ["first step"], "{log}");
    // As root the same limit is a pids cgroup: no warning.
    let s = Sandbox::new(As::Root);
    let out = s.build(
        "RUN i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo R: spawned all",
        &["--pids-limit", "64"],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(!log.contains("no cgroup"), "{log}");
    assert!(log.contains("can't fork"), "{log}");
}

crate::it_test!(issue_10_dockers_seccomp_profile_is_in_force);
fn issue_10_dockers_seccomp_profile_is_in_force() {
    for who in BOTH {
        let s = Sandbox::new(who);
        let r = s.results(
            "RUN echo R: $(grep ^Seccomp: /proc/self/status)\n\
             RUN echo R: unshare $(/probe unshare_user)\n\
             RUN echo R: clone3 $(/probe clone3)\n\
             RUN echo R: mount $(/probe mount)",
            &[],
        );
        // Filter mode 2; a user namespace (no capability needed) refused by
        // the profile; clone3 answered ENOSYS, the profile's signature.
        assert_eq!(
            r,
            [
                "Seccomp: 2",
                "unshare EPERM",
                "clone3 ENOSYS",
                "mount EPERM"
            ],
            "{who:?}"
        );
    }
}

crate::it_test!(issue_10_capabilities_are_dockers_for_root_and_none_for_a_user);
fn issue_10_capabilities_are_dockers_for_root_and_none_for_a_user() {
    for who in BOTH {
        let s = Sandbox::new(who);
        // imgbuild started with CAP_SYS_ADMIN inheritable and ambient (a
        // wrapper, a CI runner with ambient capabilities): for root the
        // kernel adds the inheritable set to the permitted one at exec, so
        // dropping only the bounding set would hand it to the command.
        let out = s.build_with(
            "RUN echo R: $(grep ^Cap /proc/self/status | tr '\\t\\n' '= ')\n\
             USER app\n\
             RUN echo R: $(grep ^Cap /proc/self/status | tr '\\t\\n' '= ')",
            &[],
            |c| {
                if who == As::Root {
                    let prog = c.get_program().to_owned();
                    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
                    let mut w = Command::new("setpriv");
                    w.args([
                        "--inh-caps=+sys_admin,+sys_module",
                        "--ambient-caps=+sys_admin",
                    ])
                    .arg(prog)
                    .args(args)
                    .current_dir(s.path())
                    .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))));
                    *c = w;
                }
            },
        );
        let log = stderr(&out);
        assert!(out.status.success(), "{who:?}: {log}");
        let r = results(&log);
        let caps = |inh, prm, eff, amb| {
            format!("CapInh:={inh} CapPrm:={prm} CapEff:={eff} CapBnd:={DOCKER_CAPS} CapAmb:={amb}")
        };
        let none = "0000000000000000";
        assert_eq!(
            r,
            [
                caps(none, DOCKER_CAPS, DOCKER_CAPS, none),
                caps(none, none, none, none)
            ],
            "{who:?}"
        );
    }
}

crate::it_test!(issue_10_proc_and_sys_are_masked_as_docker_masks_them);
fn issue_10_proc_and_sys_are_masked_as_docker_masks_them() {
    for who in BOTH {
        let s = Sandbox::new(who);
        let r = s.results(
            "RUN echo R: timer_list $(wc -c < /proc/timer_list) keys $(wc -c < /proc/keys) acpi $(ls -A /proc/acpi | wc -l)\n\
             RUN echo R: sys $(grep ' /sys ' /proc/mounts | cut -d' ' -f3-4 | cut -d, -f1) $(ls /sys/class/net | tr '\\n' ' ')\n\
             RUN (echo x > /proc/sysrq-trigger) 2>/dev/null || echo R: sysrq refused",
            &[],
        );
        assert_eq!(r[0], "timer_list 0 keys 0 acpi 0", "{who:?}");
        // A read-only /sys of the sandbox's own network (podman binds the
        // host's only for --network host).
        assert_eq!(r[1], "sys sysfs ro lo tap0", "{who:?}");
        assert_eq!(r[2], "sysrq refused", "{who:?}");
    }
}

/// A network namespace made for a test, with an interface of its own and
/// servers on it; removed on drop.
struct NetNs {
    name: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

static NETNS: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    const OUTSIDE: &'static str = "10.203.0.1";

    fn new() -> NetNs {
        let name = format!(
            "imgbt{}-{}",
            std::process::id(),
            NETNS.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = NetNs {
            name: name.clone(),
            stop: Default::default(),
            servers: Vec::new(),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // A dummy interface; this development machine's kernel has no dummy
        // driver, where one end of a veth pair stands in for it.
        let dummy = Command::new("ip")
            .args(["-n", &name, "link", "add", "outside0", "type", "dummy"])
            .output()
            .expect("ip (iproute2)");
        if !dummy.status.success() {
            ip(&[
                "-n", &name, "link", "add", "outside0", "type", "veth", "peer", "name", "outside1",
            ]);
            ip(&["-n", &name, "link", "set", "outside1", "up"]);
        }
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/24", Self::OUTSIDE),
            "dev",
            "outside0",
        ]);
        ip(&["-n", &name, "link", "set", "outside0", "up"]);
        ns
    }

    /// A TCP server inside the namespace on `addr` that answers `reply`;
    /// returns its port. It serves at most 50 connections for at most 120 s.
    fn serve(&mut self, addr: &str, reply: &'static str) -> u16 {
        let ns = PathBuf::from("/run/netns").join(&self.name);
        let addr = addr.to_string();
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.servers.push(std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&f),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let l = TcpListener::bind((addr.as_str(), 0)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut served = 0;
            while served < 50 && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(format!("{reply}\n").as_bytes());
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        rx.recv().unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

crate::it_test!(issue_10_run_reaches_out_through_slirp4netns_but_not_the_hosts_loopback);
fn issue_10_run_reaches_out_through_slirp4netns_but_not_the_hosts_loopback() {
    for who in BOTH {
        let mut ns = NetNs::new();
        let outside = ns.serve(NetNs::OUTSIDE, "outside-ok");
        let local = ns.serve("127.0.0.1", "loopback-secret");
        let mut s = Sandbox::new(who);
        s.netns = Some(ns.name.clone());
        let probe = format!(
            "RUN echo R: out $(/probe connect {o} {outside})\n\
             RUN echo R: gateway $(/probe connect 10.0.2.2 {local})\n\
             RUN echo R: lo $(/probe connect 127.0.0.1 {local})\n\
             RUN echo R: ifaces $(ls /sys/class/net | tr '\\n' ' ')",
            o = NetNs::OUTSIDE
        );
        // The default: outbound works (NAT through slirp4netns in the
        // namespace imgbuild runs in), its loopback and interfaces do not
        // show (--disable-host-loopback; a private namespace).
        let r = s.results(&probe, &[]);
        assert_eq!(r[0], "out ok outside-ok", "{who:?}");
        assert!(!r[1].contains("loopback-secret"), "{who:?}: {}", r[1]);
        assert_eq!(r[2], "lo ECONNREFUSED", "{who:?}");
        assert_eq!(r[3], "ifaces lo tap0", "{who:?}");
        // --network host is the explicit opt-in: the namespace's own
        // loopback and interfaces.
        let r = s.results(&probe, &["--network", "host"]);
        assert_eq!(r[0], "out ok outside-ok", "{who:?}");
        assert_eq!(r[2], "lo ok loopback-secret", "{who:?}");
        assert!(r[3].contains("outside0"), "{who:?}: {}", r[3]);
        // none: loopback only.
        let r = s.results(&probe, &["--network", "none"]);
        assert_eq!(r[0], "out ENETUNREACH", "{who:?}");
        assert_eq!(r[2], "lo ECONNREFUSED", "{who:?}");
        assert_eq!(r[3], "ifaces lo", "{who:?}");
        // imgbuild run has the same default.
        let out = s
            .cmd(&[
                "run",
                "base:latest",
                "sh",
                "-c",
                "ls /sys/class/net | tr '\\n' ' '",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "lo tap0 ",
            "{who:?}: {}",
            stderr(&out)
        );
    }
}

crate::it_test!(issue_10_one_network_per_build_shared_by_its_steps);
fn issue_10_one_network_per_build_shared_by_its_steps() {
    // Two RUN steps share one namespace (one slirp4netns for the build),
    // and nothing is left in it after the build.
    let s = Sandbox::new(As::Root);
    let r = s.results(
        "RUN echo R: $(cat /sys/class/net/tap0/address) $(readlink /proc/self/ns/net)\n\
         RUN echo R: $(cat /sys/class/net/tap0/address) $(readlink /proc/self/ns/net)",
        &[],
    );
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], r[1]);
    let ns = r[0].split(' ').nth(1).unwrap().to_string();
    assert!(ns.starts_with("net:["), "{ns}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inside = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path().join("ns/net")).ok())
            .filter(|l| l.to_string_lossy() == ns)
            .count();
        if inside == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{inside} processes left in {ns}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
