//! Issue 15, item 4 and part of 5: `--ssh` with `RUN --mount=type=ssh`
//! against a real `ssh-agent` (and a real `sshd` on 127.0.0.1), and
//! `--secret id=…,env=…` with `RUN --mount=type=secret,env=…`.
//!
//! The RUN steps use the host's own OpenSSH client: `ssh-add` and `ssh` with
//! the shared libraries `ldd` names, copied onto the busybox base
//! ([`ssh_base`]). The keys are made per test by `ssh-keygen`; every test
//! that forwards one checks that its private bytes reach no file of the
//! store and no layer of the output.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::security::As;
use crate::util::{
    TestEnv, archive_layers, assert_success, busybox_base, layer_listings, stderr, tool, unpack,
};

/// A key pair made by `ssh-keygen` (ed25519, no passphrase).
struct Key {
    private: PathBuf,
    public: PathBuf,
    /// `ssh-keygen -lf KEY.pub`: what `ssh-add -l` prints for it.
    fingerprint: String,
}

impl Key {
    fn new(dir: &Path, name: &str) -> Key {
        std::fs::create_dir_all(dir).unwrap();
        let private = dir.join(name);
        let p = private.to_str().unwrap();
        tool(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p],
        );
        let public = dir.join(format!("{name}.pub"));
        let fingerprint = tool("ssh-keygen", &["-lf", public.to_str().unwrap()]);
        Key {
            private,
            public,
            fingerprint,
        }
    }

    /// The base64 lines of the private key: what would show if its bytes
    /// leaked anywhere.
    fn secret_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.private)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_string)
            .collect()
    }
}

/// A real `ssh-agent -D` on a socket of the test's, killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Key]) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client)");
        // It prints its first line once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("SSH_AUTH_SOCK="),
            "ssh-agent said {line:?}"
        );
        let agent = Agent { child, socket };
        for k in keys {
            let out = agent.ssh_add(&[k.private.to_str().unwrap()]);
            assert!(out.status.success(), "ssh-add: {out:?}");
        }
        agent
    }

    fn ssh_add(&self, args: &[&str]) -> Output {
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared libraries and loader `ldd` names for `bin`.
fn libraries(bin: &str) -> Vec<PathBuf> {
    tool("ldd", &[bin])
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Builds `sshbase:latest`: the busybox base plus the host's `ssh-add` and
/// `ssh` at their paths, with their libraries at theirs.
fn ssh_base(env: &TestEnv) -> &'static str {
    busybox_base(env);
    let root = env.path().join("sshbase/rootfs");
    let mut files: Vec<PathBuf> = Vec::new();
    for bin in ["/usr/bin/ssh-add", "/usr/bin/ssh"] {
        files.push(bin.into());
        files.extend(libraries(bin));
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // Through symlinks: the image gets the files themselves.
        std::fs::copy(&f, &to).unwrap();
    }
    env.write(
        "sshbase/Dockerfile",
        "FROM base:latest\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\n",
    );
    let out = env.run_in(
        &env.path().join("sshbase"),
        &["build", "-q", "-t", "sshbase:latest", "."],
    );
    assert_success(&out, &["build sshbase"]);
    "sshbase:latest"
}

/// `imgbuild build --progress=plain ARGS .` in `env`'s ctx/, with a fixed
/// epoch, as `who`, with `vars` set and `SSH_AUTH_SOCK` only if among them.
fn build(env: &TestEnv, who: As, dockerfile: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    env.write("ctx/Dockerfile", dockerfile);
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    all.push(".");
    let mut c = who.cmd(env, &env.path().join("ctx"), &all);
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("SSH_AUTH_SOCK");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn built(env: &TestEnv, who: As, dockerfile: &str, args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = build(env, who, dockerfile, args, vars);
    assert_success(&out, args);
    stderr(&out)
}

/// The file `rel` of the image in `archive`, unpacked by skopeo and umoci.
fn files_of(env: &TestEnv, archive: &str) -> impl Fn(&str) -> String {
    let work = env.path().join(format!("unpacked-{archive}"));
    std::fs::create_dir_all(&work).unwrap();
    let rootfs = unpack(&env.path().join("ctx").join(archive), &work);
    move |rel: &str| {
        std::fs::read_to_string(rootfs.join(rel))
            .unwrap_or_else(|e| panic!("{rel} in the image: {e}"))
    }
}

/// Every file under `dir` whose bytes — as stored, or decompressed when
/// they are gzip or zstd — contain one of `needles`.
fn files_holding(dir: &Path, needles: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                todo.push(p);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let Ok(raw) = std::fs::read(&p) else { continue };
            let mut plain = Vec::new();
            if raw.starts_with(&[0x1f, 0x8b]) {
                let _ = flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut plain);
            } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                plain = zstd::decode_all(&raw[..]).unwrap_or_default();
            }
            let has = |hay: &[u8]| {
                needles
                    .iter()
                    .any(|n| hay.windows(n.len()).any(|w| w == n.as_bytes()))
            };
            if has(&raw) || has(&plain) {
                found.push(p);
            }
        }
    }
    found
}

/// Asserts that none of `needles` is in the store, or in the archives
/// under ctx/: their configs and history (read as they are) and their
/// layers (decompressed).
fn nowhere(env: &TestEnv, archives: &[&str], needles: &[String]) {
    let in_store = files_holding(&env.store(), needles);
    assert!(in_store.is_empty(), "in the store: {in_store:?}");
    for a in archives {
        let path = env.path().join("ctx").join(a);
        let raw = std::fs::read(&path).unwrap();
        for n in needles {
            assert!(
                !raw.windows(n.len()).any(|w| w == n.as_bytes()),
                "{a} holds {n:?}"
            );
        }
        for (i, layer) in archive_layers(&path).iter().enumerate() {
            for n in needles {
                assert!(
                    !layer.windows(n.len()).any(|w| w == n.as_bytes()),
                    "layer {i} of {a} holds {n:?}"
                );
            }
        }
    }
}

/// `ssh-agent` processes working in `store` (where a build starts its
/// private agents), left over or running.
fn private_agents(store: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let cmdline = std::fs::read(p.join("cmdline")).ok()?;
            let argv0 = cmdline.split(|b| *b == 0).next()?;
            argv0.ends_with(b"ssh-agent").then_some(())?;
            let cwd = std::fs::read_link(p.join("cwd")).ok()?;
            cwd.starts_with(store).then(|| cwd.display().to_string())
        })
        .collect()
}

crate::it_test!(ssh_add_in_run_sees_the_forwarded_agent_only_through_its_mount);
fn ssh_add_in_run_sees_the_forwarded_agent_only_through_its_mount() {
    let env = TestEnv::new();
    let base = ssh_base(&env);
    let key = Key::new(&env.path().join("keys"), "forwarded");
    let agent = Agent::start(&env.path().join("agent"), &[&key]);
    let sock = agent.socket.to_str().unwrap();
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=ssh ssh-add -l > /listed; echo $SSH_AUTH_SOCK > /sock\n\
         RUN ssh-add -l > /unmounted 2>&1; echo $? > /unmounted-code; ls /run/buildkit > /no-run 2>&1; true\n\
         RUN --mount=type=ssh,target=/tmp/a.sock,uid=1000,gid=1000,mode=0640 \
             stat -c '%u:%g %a %F' /tmp/a.sock > /st; echo $SSH_AUTH_SOCK > /sock2\n\
         RUN --mount=type=ssh ssh-add -D > /remove 2>&1; echo $? > /remove-code; ssh-add -l > /after-remove\n\
         USER app\n\
         RUN --mount=type=ssh,uid=1000 ssh-add -l > /tmp/as-app\n\
         RUN --mount=type=ssh ssh-add -l > /tmp/denied 2>&1; echo $? > /tmp/denied-code\n"
    );
    built(
        &env,
        As::Root,
        &df,
        &["--ssh", "default", "-o", "out.tar"],
        &[("SSH_AUTH_SOCK", sock)],
    );
    let read = files_of(&env, "out.tar");
    assert_eq!(
        read("listed"),
        key.fingerprint,
        "ssh-add -l through the mount"
    );
    assert_eq!(read("sock"), "/run/buildkit/ssh_agent.0\n", "SSH_AUTH_SOCK");
    assert_eq!(
        read("unmounted-code"),
        "2\n",
        "no agent without a mount: {}",
        read("unmounted")
    );
    assert!(
        read("no-run").contains("No such file"),
        "{}",
        read("no-run")
    );
    assert_eq!(
        read("st"),
        "1000:1000 640 socket\n",
        "owner and mode= of the socket"
    );
    assert_eq!(
        read("sock2"),
        "/tmp/a.sock\n",
        "SSH_AUTH_SOCK follows target="
    );
    // The forwarded agent is read-only: removing keys is refused, and the
    // key is still there, in the step and on the host.
    assert_ne!(read("remove-code"), "0\n", "ssh-add -D: {}", read("remove"));
    assert_eq!(read("after-remove"), key.fingerprint);
    let host = agent.ssh_add(&["-l"]);
    assert_eq!(String::from_utf8_lossy(&host.stdout), key.fingerprint);
    assert_eq!(
        read("tmp/as-app"),
        key.fingerprint,
        "uid=1000 lets USER app in"
    );
    assert_eq!(
        read("tmp/denied-code"),
        "2\n",
        "root's 0600 socket is closed to USER app: {}",
        read("tmp/denied")
    );
    // Nothing of the mounts is in a layer.
    let listings = layer_listings(&env.path().join("ctx/out.tar")).concat();
    for gone in ["run/buildkit", "tmp/a.sock", "ssh_agent"] {
        assert!(
            !listings.iter().any(|l| l.contains(gone)),
            "{gone} in a layer: {listings:#?}"
        );
    }
    nowhere(&env, &["out.tar"], &key.secret_lines());
}

crate::it_test!(ssh_key_files_are_held_by_a_private_agent_keyed_on_the_mount_alone);
fn ssh_key_files_are_held_by_a_private_agent_keyed_on_the_mount_alone() {
    let env = TestEnv::new();
    let base = ssh_base(&env);
    let keys = env.path().join("keys");
    let (one, two) = (Key::new(&keys, "one"), Key::new(&keys, "two"));
    let (k1, k2) = (one.private.to_str().unwrap(), two.private.to_str().unwrap());
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=ssh ssh-add -l > /default\n\
         RUN --mount=type=ssh,id=other ssh-add -l > /other\n\
         RUN --mount=type=ssh,id=both ssh-add -l | wc -l > /both\n"
    );
    let d = format!("default={k1}");
    let o = format!("other={k2}");
    let b = format!("both={k1},{k2}");
    // No SSH_AUTH_SOCK at all: the keys need no agent of the caller's.
    built(
        &env,
        As::Root,
        &df,
        &["--ssh", &d, "--ssh", &o, "--ssh", &b, "-o", "out.tar"],
        &[],
    );
    let read = files_of(&env, "out.tar");
    assert_eq!(read("default"), one.fingerprint);
    assert_eq!(read("other"), two.fingerprint, "id= picks the agent");
    assert_eq!(read("both"), "2\n");
    assert_eq!(
        private_agents(&env.store()),
        Vec::<String>::new(),
        "the build's agents are gone"
    );
    nowhere(
        &env,
        &["out.tar"],
        &[one.secret_lines(), two.secret_lines()].concat(),
    );

    // Other keys under the same ids: the steps are cached (BuildKit keys an
    // ssh mount on its id and target, never on the agent's keys).
    let d = format!("default={k2}");
    let o = format!("other={k1}");
    let log = built(
        &env,
        As::Root,
        &df,
        &["--ssh", &d, "--ssh", &o, "--ssh", &b],
        &[],
    );
    assert_eq!(log.matches(" ---> Using cache").count(), 3, "{log}");
    // A new target is a new step.
    let moved = df.replace("type=ssh,id=other", "type=ssh,id=other,target=/tmp/s");
    let log = built(
        &env,
        As::Root,
        &moved,
        &["--ssh", &d, "--ssh", &o, "--ssh", &b],
        &[],
    );
    assert_eq!(log.matches(" ---> Using cache").count(), 1, "{log}");
}

crate::it_test!(ssh_mistakes_are_reported_before_any_work);
fn ssh_mistakes_are_reported_before_any_work() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let keys = env.path().join("keys");
    // Required, and no --ssh for it: located, exit 2.
    let df = format!("FROM {base}\nRUN --mount=type=ssh,id=deploy,required=true true\n");
    let out = build(&env, As::Root, &df, &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Dockerfile:2:") && err.contains("no agent `deploy` was given"),
        "{err}"
    );
    assert!(
        err.contains("--ssh deploy"),
        "the help names the flag: {err}"
    );
    assert!(!err.contains("Step 1/"), "no step ran: {err}");
    // Not required: the step runs without the socket.
    let df = format!("FROM {base}\nRUN --mount=type=ssh test ! -e /run/buildkit/ssh_agent.0\n");
    built(&env, As::Root, &df, &[], &[]);
    // `--ssh default` with no SSH_AUTH_SOCK: buildx's message.
    let out = build(&env, As::Root, &df, &["--ssh", "default"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("make sure SSH_AUTH_SOCK is set"),
        "{}",
        stderr(&out)
    );
    // A passphrase-protected key, a file that is no key, one that is missing.
    std::fs::create_dir_all(&keys).unwrap();
    let locked = keys.join("locked");
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "passphrase",
            "-f",
            locked.to_str().unwrap(),
        ],
    );
    for (path, says) in [
        (locked.clone(), "passphrase protected".to_string()),
        (keys.join("locked.pub"), "is not a private key".to_string()),
        (
            keys.join("missing"),
            keys.join("missing").display().to_string(),
        ),
    ] {
        let spec = format!("default={}", path.display());
        let out = build(&env, As::Root, &df, &["--ssh", &spec], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(
            err.contains(&says) && err.contains("--ssh default"),
            "{spec}: {err}"
        );
    }
}

/// A real `sshd` on 127.0.0.1 that lets in `key` only, as root, and
/// answers every login with [`GREETING`] (`ForceCommand`); stopped when
/// dropped.
struct Sshd {
    child: Child,
    port: u16,
    /// `[127.0.0.1]:PORT` and the host key, for `UserKnownHostsFile`.
    known_hosts: String,
}

const GREETING: &str = "authenticated-through-the-forwarded-agent";

impl Sshd {
    fn start(dir: &Path, key: &Key) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        // OpenSSH's privilege separation directory (Debian's unit makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host = Key::new(dir, "host_ed25519");
        let authorized = dir.join("authorized_keys");
        std::fs::copy(&key.public, &authorized).unwrap();
        let port = crate::registry::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPidFile none\nForceCommand echo {GREETING}\n",
                host.private.display(),
                authorized.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sshd (openssh-server)");
        // Its log goes to stderr (-e): wait for it to listen, then drain it.
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if log.read_line(&mut line).unwrap() == 0 {
                panic!("sshd exited: {said}");
            }
            said.push_str(&line);
            if line.contains("Server listening on 127.0.0.1") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        let pubkey = std::fs::read_to_string(&host.public).unwrap();
        let mut parts = pubkey.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        Sshd {
            child,
            port,
            known_hosts,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

crate::it_test!(ssh_in_run_logs_in_to_an_sshd_through_the_forwarded_agent);
fn ssh_in_run_logs_in_to_an_sshd_through_the_forwarded_agent() {
    let env = TestEnv::new();
    let base = ssh_base(&env);
    let key = Key::new(&env.path().join("keys"), "deploy");
    let sshd = Sshd::start(&env.path().join("sshd"), &key);
    env.write("ctx/known_hosts", &sshd.known_hosts);
    // The host key is checked; only the agent can authenticate (no key
    // files in the image, no passwords).
    let ssh = format!(
        "ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile=/etc/known_hosts -o PasswordAuthentication=no \
         -p {} root@127.0.0.1",
        sshd.port
    );
    let df = format!(
        "FROM {base}\n\
         COPY known_hosts /etc/known_hosts\n\
         RUN --mount=type=ssh {ssh} > /greeting\n\
         RUN {ssh} > /refused 2>&1; echo $? > /refused-code\n"
    );
    let keyfile = format!("default={}", key.private.display());
    let agent = Agent::start(&env.path().join("agent"), &[&key]);
    let sock = agent.socket.to_str().unwrap();
    for (what, flag, vars) in [
        ("a key file", keyfile.as_str(), vec![]),
        (
            "the caller's agent",
            "default",
            vec![("SSH_AUTH_SOCK", sock)],
        ),
    ] {
        let args = [
            "--ssh",
            flag,
            "--network",
            "host",
            "--no-cache",
            "-o",
            "out.tar",
        ];
        built(&env, As::Root, &df, &args, &vars);
        let read = files_of(&env, "out.tar");
        assert_eq!(read("greeting"), format!("{GREETING}\n"), "{what}");
        assert_eq!(read("refused-code"), "255\n", "{what}: {}", read("refused"));
        assert!(
            read("refused").contains("Permission denied (publickey)"),
            "{what}: {}",
            read("refused")
        );
        nowhere(&env, &["out.tar"], &key.secret_lines());
    }
}

crate::it_test!(
    ssh_mounts_work_rootless,
    needs = crate::sandbox::unprivileged_user_namespaces
);
fn ssh_mounts_work_rootless() {
    assert!(
        crate::sandbox::has_subids(1000),
        "uid 1000 has no subordinate ids: .ci/run grants them"
    );
    let env = TestEnv::new();
    let base = ssh_base(&env);
    let key = Key::new(&env.path().join("keys"), "rootless");
    let spec = format!("default={}", key.private.display());
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=ssh ssh-add -l > /listed\n\
         RUN --mount=type=ssh,uid=1000,gid=1000,mode=0600 stat -c '%u:%g %a' /run/buildkit/ssh_agent.0 > /st\n"
    );
    built(
        &env,
        As::User,
        &df,
        &["--ssh", &spec, "-o", "user.tar"],
        &[],
    );
    let read = files_of(&env, "user.tar");
    assert_eq!(read("listed"), key.fingerprint);
    assert_eq!(read("st"), "1000:1000 600\n");
    assert_eq!(private_agents(&env.store()), Vec::<String>::new());
    nowhere(&env, &["user.tar"], &key.secret_lines());

    // With only its own id mapped, uid 0 works and uid 1000 cannot be
    // given the socket: said, with the way out.
    let df = format!("FROM {base}\nRUN --mount=type=ssh ssh-add -l > /listed\n");
    built(
        &env,
        As::UserSingle,
        &df,
        &["--ssh", &spec, "-o", "single.tar"],
        &[],
    );
    assert_eq!(files_of(&env, "single.tar")("listed"), key.fingerprint);
    let df = format!("FROM {base}\nRUN --mount=type=ssh,uid=1000 ssh-add -l\n");
    let out = build(&env, As::UserSingle, &df, &["--ssh", &spec], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("uid=1000") && err.contains("/etc/subuid"),
        "{err}"
    );
}

/// A value no file of the test holds: what a leak would show.
fn secret_value() -> String {
    format!("imgbuild-test-secret-{}", std::process::id() ^ 0x5eed)
}

fn sha256(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

crate::it_test!(secrets_from_variables_reach_run_as_files_and_variables);
fn secrets_from_variables_reach_run_as_files_and_variables() {
    secrets_for(As::Root);
}

crate::it_test!(
    secrets_from_variables_reach_rootless_run,
    needs = crate::sandbox::unprivileged_user_namespaces
);
fn secrets_from_variables_reach_rootless_run() {
    secrets_for(As::User);
    secrets_for(As::UserSingle);
}

fn secrets_for(who: As) {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let value = secret_value();
    let from_file = format!("{value}-from-a-file");
    env.write("ctx/token-file", &from_file);
    let df = format!(
        "FROM {base}\n\
         RUN --mount=type=secret,id=tok cat /run/secrets/tok | sha256sum > /file\n\
         RUN --mount=type=secret,id=tok,env=TOK echo -n \"$TOK\" | sha256sum > /env; \
             test -e /run/secrets/tok || echo none > /no-file\n\
         RUN --mount=type=secret,id=tok,env=TOK,target=/s echo -n \"$TOK\" | sha256sum > /both-env; \
             cat /s | sha256sum > /both-file\n\
         RUN --mount=type=secret,id=ftok,env=FTOK echo -n \"$FTOK\" | sha256sum > /file-env\n\
         RUN env > /later-env; test -e /run/secrets || echo clean > /run-clean\n"
    );
    let args = [
        "--secret",
        "id=tok,env=MY_TOKEN",
        "--secret",
        "id=ftok,src=token-file",
        "-o",
        "out.tar",
    ];
    built(&env, who, &df, &args, &[("MY_TOKEN", &value)]);
    let read = files_of(&env, "out.tar");
    let want = sha256(&value);
    assert_eq!(
        read("file"),
        want,
        "{who:?}: the variable as /run/secrets/tok"
    );
    assert_eq!(read("env"), want, "{who:?}: env= alone");
    assert_eq!(
        read("no-file"),
        "none\n",
        "{who:?}: env= and no target: no file"
    );
    assert_eq!(read("both-env"), want, "{who:?}");
    assert_eq!(read("both-file"), want, "{who:?}: env= and target=");
    assert_eq!(
        read("file-env"),
        sha256(&from_file),
        "{who:?}: a file's secret as a variable"
    );
    assert!(
        !read("later-env").contains("TOK"),
        "{who:?}: {}",
        read("later-env")
    );
    assert_eq!(
        read("run-clean"),
        "clean\n",
        "{who:?}: /run/secrets is gone"
    );
    nowhere(&env, &["out.tar"], std::slice::from_ref(&value));
}
