//! RUN in the sandbox and `imgbuild run`, for real: namespaces, overlay,
//! diff capture, on a busybox-static base image each test builds.

use std::path::Path;
use std::process::Output;

use crate::util::{
    TestEnv, assert_success, busybox_base, layer_listings, mounts_under, oci_archive, stderr,
    unpack,
};

fn unpacked(env: &TestEnv, archive: &Path) -> std::path::PathBuf {
    let work = env.path().join("unpacked");
    std::fs::create_dir_all(&work).unwrap();
    unpack(archive, &work)
}

fn build(env: &TestEnv, dockerfile: &str, args: &[&str]) -> Output {
    env.write("ctx/Dockerfile", dockerfile);
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    all.push(".");
    let mut c = env.cmd_in(&env.path().join("ctx"), &all);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    c.output().unwrap()
}

fn built(env: &TestEnv, dockerfile: &str, args: &[&str]) -> String {
    let out = build(env, dockerfile, args);
    assert_success(&out, args);
    stderr(&out)
}

/// `(step number, image id)` of every `Step n/m` block of a plain log, and
/// whether it came from the cache.
fn steps(log: &str) -> Vec<(usize, bool, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, bool)> = None;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("Step ") {
            cur = Some((rest.split('/').next().unwrap().parse().unwrap(), false));
        } else if line == " ---> Using cache" {
            if let Some(c) = cur.as_mut() {
                c.1 = true;
            }
        } else if let Some(id) = line.strip_prefix(" ---> ").filter(|s| s.len() == 12) {
            if let Some((n, cached)) = cur.take() {
                out.push((n, cached, id.to_string()));
            }
        }
    }
    out
}

fn run(env: &TestEnv, args: &[&str]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    env.run(&all)
}

crate::it_test!(issue_5_the_seed_story);
fn issue_5_the_seed_story() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write("ctx/foo.txt", "Hello World\n");
    let df = format!("FROM {base}\nCOPY foo.txt /foo.txt\nRUN date > /built-on.txt\n");
    let log = built(&env, &df, &["-t", "demo:latest"]);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with(" ---> Cache miss"))
        .collect();
    assert_eq!(lines[0], format!("Step 1/3 : FROM {base}"));
    assert_eq!(lines[2], "Step 2/3 : COPY foo.txt /foo.txt");
    assert_eq!(lines[4], "Step 3/3 : RUN date > /built-on.txt");
    assert!(log.contains("Successfully tagged demo:latest"), "{log}");
    let first = steps(&log);
    let step2 = &first[1].2;

    let out = run(&env, &[step2, "cat", "/foo.txt"]);
    assert_success(&out, &["run", "cat /foo.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello World\n");
    let out = run(&env, &[step2, "cat", "/built-on.txt"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("No such file or directory"),
        "{}",
        stderr(&out)
    );
    let out = run(&env, &["demo:latest", "cat", "/built-on.txt"]);
    assert_success(&out, &["run demo cat /built-on.txt"]);

    // A changed RUN: step 2 from the cache with the same ID, step 3 rebuilt.
    let df2 = format!("FROM {base}\nCOPY foo.txt /foo.txt\nRUN date +%Y-%m-%d > /built-on.txt\n");
    let log = built(&env, &df2, &["-t", "demo:latest"]);
    let again = steps(&log);
    assert_eq!(again[1], (2, true, step2.clone()), "{log}");
    assert!(!again[2].1, "{log}");
    assert_ne!(again[2].2, first[2].2);

    let history = env.ok(&["history", "demo:latest"]);
    assert!(
        history
            .lines()
            .any(|l| l.contains("RUN date +%Y-%m-%d > /built-on.txt") && l.contains("B ")),
        "{history}"
    );
    assert!(
        history
            .lines()
            .any(|l| l.starts_with(step2.as_str()) && l.contains("COPY foo.txt")),
        "{history}"
    );
}

crate::it_test!(deletions_become_whiteouts_and_replaced_dirs_opaque);
fn deletions_become_whiteouts_and_replaced_dirs_opaque() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let df = format!(
        "FROM {base}\nRUN rm /etc/motd\nRUN rm -rf /opt/d && mkdir /opt/d && echo new > /opt/d/g\n"
    );
    built(&env, &df, &["-o", "out.tar"]);
    let archive = env.path().join("ctx/out.tar");
    let layers = layer_listings(&archive);
    let names = |i: usize| -> Vec<String> {
        layers[i]
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(1), ["etc/", "etc/.wh.motd"]);
    assert_eq!(
        names(2),
        ["opt/", "opt/d/", "opt/d/.wh..wh..opq", "opt/d/g"]
    );

    let rootfs = unpacked(&env, &archive);
    assert!(!rootfs.join("etc/motd").exists());
    assert!(rootfs.join("etc/passwd").exists());
    let d: Vec<String> = std::fs::read_dir(rootfs.join("opt/d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(d, ["g"]);

    // The fallbacks (the upper on disk; a private copy compared afterwards)
    // make the same bytes as the default (the upper in memory).
    for mode in ["disk", "copy"] {
        let out = format!("{mode}.tar");
        let mut c = env.cmd_in(
            &env.path().join("ctx"),
            &["build", "--no-cache", "-q", "-o", &out, "."],
        );
        c.env("SOURCE_DATE_EPOCH", "1700000000")
            .env("IMGBUILD_SANDBOX", mode);
        assert_success(&c.output().unwrap(), &[mode]);
        assert_eq!(
            std::fs::read(&archive).unwrap(),
            std::fs::read(env.path().join("ctx").join(&out)).unwrap(),
            "{mode}"
        );
    }
}

crate::it_test!(a_step_that_fills_the_memory_upper_runs_again_on_disk);
fn a_step_that_fills_the_memory_upper_runs_again_on_disk() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nRUN echo attempt && head -c 3000000 /dev/zero > /big\n"),
    );
    let mut c = env.cmd_in(
        &env.path().join("ctx"),
        &["build", "--progress=plain", "-o", "out.tar", "."],
    );
    c.env("IMGBUILD_RUN_MEMORY", "1m");
    let out = c.output().unwrap();
    assert_success(&out, &["build"]);
    let log = stderr(&out);
    assert!(
        log.contains("after filling the memory")
            && log.contains("keeping the changes of RUN steps on disk instead"),
        "{log}"
    );
    assert_eq!(log.lines().filter(|l| *l == "attempt").count(), 2, "{log}");
    let listing = layer_listings(&env.path().join("ctx/out.tar"));
    assert!(
        listing[1]
            .iter()
            .any(|l| l.starts_with("big ") && l.ends_with(" 3000000")),
        "{:?}",
        listing[1]
    );
    assert!(mounts_under(env.path()).is_empty());
}

crate::it_test!(a_failing_run_says_why_and_changes_nothing);
fn a_failing_run_says_why_and_changes_nothing() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write("ctx/a.txt", "a\n");
    let ok = format!("FROM {base}\nCOPY a.txt /a.txt\n");
    built(&env, &ok, &[]);
    let bad =
        format!("FROM {base}\nCOPY a.txt /a.txt\nRUN echo working; echo broken >&2; exit 7\n");
    let out = build(&env, &bad, &["-o", "bad.tar"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("Dockerfile:3:1"), "{e}");
    assert!(e.contains("exited with code 7"), "{e}");
    assert!(e.contains("broken"), "{e}");
    assert!(!env.path().join("ctx/bad.tar").exists());
    // Nothing mounted, nothing half-made, the store intact and the cache usable.
    assert!(
        mounts_under(env.path()).is_empty(),
        "{:?}",
        mounts_under(env.path())
    );
    let tmp: Vec<_> = std::fs::read_dir(env.store().join("tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "store/tmp: {tmp:?}");
    assert_success(&env.run(&["store", "check"]), &["store check"]);
    let log = built(&env, &ok, &[]);
    assert!(log.contains("Using cache"), "{log}");
}

crate::it_test!(run_writes_are_thrown_away_and_the_status_passes_through);
fn run_writes_are_thrown_away_and_the_status_passes_through() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let out = run(
        &env,
        &[
            base,
            "sh",
            "-c",
            "echo scribble > /etc/motd; echo x > /new; exit 42",
        ],
    );
    assert_eq!(out.status.code(), Some(42));
    let out = run(&env, &[base, "cat", "/etc/motd"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "welcome\n");
    assert_ne!(run(&env, &[base, "cat", "/new"]).status.code(), Some(0));
    // -e, -w, -u, and the image's CMD by default.
    let out = run(
        &env,
        &[
            "-e",
            "GREETING=hi",
            "-w",
            "/opt",
            "-u",
            "app",
            base,
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u)",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi /opt 1000\n");
    let out = run(&env, &[base, "nosuchcommand"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    assert!(mounts_under(env.path()).is_empty());
}

crate::it_test!(run_it_gives_a_terminal_that_follows_the_window);
/// `run -it`: a real terminal in the container (`tty`, `stty size`, TERM),
/// Ctrl-C reaching the command as SIGINT, the window size followed, the
/// user's terminal restored afterwards; `-v` mounts host paths.
fn run_it_gives_a_terminal_that_follows_the_window() {
    use std::io::Write;
    let env = TestEnv::new();
    let base = busybox_base(&env);
    // `script` (util-linux) gives imgbuild a terminal, as a user's shell has.
    let inner = format!(
        "stty rows 40 cols 100; before=$(stty -g); \
         (sleep 4; stty rows 50 cols 120 < /dev/tty) & \
         IMGBUILD_STORE={} {} run -it {base} sh; code=$?; \
         [ \"$before\" = \"$(stty -g)\" ] && echo outer-restored; exit $code",
        env.store().display(),
        env!("CARGO_BIN_EXE_imgbuild"),
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut input = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let pause = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
        pause(1500);
        for (text, ms) in [
            ("tty; stty size; echo TERM=$TERM\n", 500),
            ("sleep 30\n", 1000),
            ("\x03", 500),
            ("echo after-int $?\n", 3000),
            ("stty size\n", 500),
            ("exit 7\n", 1000),
        ] {
            let _ = input.write_all(text.as_bytes());
            let _ = input.flush();
            pause(ms);
        }
    });
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    for want in [
        "/dev/pts/0",
        "40 100",
        "TERM=xterm",
        "after-int 130",
        "50 120",
        "outer-restored",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    assert!(
        started.elapsed().as_secs() < 25,
        "Ctrl-C did not stop sleep 30"
    );

    // A background process that keeps the terminal open does not keep
    // `run -t` from returning once the command exits, nor loses output.
    let inner = format!(
        "IMGBUILD_STORE={} {} run -t {base} sh -c 'sleep 100 & seq 1 20000'",
        env.store().display(),
        env!("CARGO_BIN_EXE_imgbuild"),
    );
    let started = std::time::Instant::now();
    let out = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        started.elapsed().as_secs() < 20,
        "run -t waited for the background sleep"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\n20000"), "the end of the output is missing");

    // -v: a host directory, read-only or not.
    let vol = env.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "from the host\n").unwrap();
    let ro = format!("{}:/data:ro", vol.display());
    let out = run(
        &env,
        &["-v", &ro, base, "sh", "-c", "cat /data/f; echo x > /data/g"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host\n");
    assert_ne!(out.status.code(), Some(0));
    assert!(!vol.join("g").exists());
    let rw = format!("{}:/data", vol.display());
    let out = run(&env, &["-v", &rw, base, "sh", "-c", "echo x > /data/g"]);
    assert_success(&out, &["run -v"]);
    assert_eq!(std::fs::read_to_string(vol.join("g")).unwrap(), "x\n");
}

crate::it_test!(run_steps_see_docker_semantics);
fn run_steps_see_docker_semantics() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write("ctx/data/in.txt", "from the context\n");
    env.write("ctx/token", "s3cr3t\n");
    let df = format!(
        "FROM {base}\n\
         ARG VERSION=1.2\n\
         ENV MODE=release\n\
         WORKDIR /work/dir\n\
         RUN echo \"$VERSION $MODE $(pwd) $(hostname)\" > out.txt\n\
         USER app\n\
         RUN id -u > /tmp/uid\n\
         USER root\n\
         RUN --mount=type=bind,source=data,target=/mnt cat /mnt/in.txt > /from-bind; touch /mnt/x 2>/dev/null || echo ro > /ro\n\
         RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-len\n\
         RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/t && ls /scratch > /listed\n\
         RUN --network=none cat /proc/net/dev | grep -c : > /ifaces && busybox ifconfig lo | grep -o UP > /lo\n\
         RUN <<EOF\necho heredoc > /heredoc\nEOF\n"
    );
    built(
        &env,
        &df,
        &["-o", "out.tar", "--secret", "id=token,src=token"],
    );
    let rootfs = unpacked(&env, &env.path().join("ctx/out.tar"));
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("work/dir/out.txt"), "1.2 release /work/dir imgbuild\n");
    assert_eq!(read("tmp/uid"), "1000\n");
    assert_eq!(read("from-bind"), "from the context\n");
    assert_eq!(read("ro"), "ro\n");
    assert_eq!(read("secret-len"), "7\n");
    assert_eq!(read("listed"), "t\n");
    assert_eq!(read("ifaces"), "1\n", "only lo without a network");
    assert_eq!(read("lo"), "UP\n", "lo is up, as docker has it");
    assert_eq!(read("heredoc"), "heredoc\n");
    // Mount targets and secrets leave nothing behind.
    for gone in ["mnt", "run/secrets", "scratch", "mnt/x"] {
        assert!(!rootfs.join(gone).exists(), "{gone} is in the image");
    }
    let all = layer_listings(&env.path().join("ctx/out.tar"))
        .concat()
        .join("\n");
    assert!(!all.contains("s3cr3t") && !all.contains("secrets"), "{all}");
    let history = env.ok(&["history", "--no-trunc", &stdout_id(&env)]);
    assert!(!history.contains("s3cr3t"));
}

fn stdout_id(env: &TestEnv) -> String {
    let mut c = env.cmd_in(
        &env.path().join("ctx"),
        &["build", "-q", "--secret", "id=token,src=token", "."],
    );
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &["build -q"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

crate::it_test!(a_cache_mount_persists_between_builds_and_stays_out_of_layers);
fn a_cache_mount_persists_between_builds_and_stays_out_of_layers() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let df = format!(
        "FROM {base}\nARG N\nRUN --mount=type=cache,target=/cache echo $N >> /cache/log && cat /cache/log > /seen\n"
    );
    built(&env, &df, &["--build-arg", "N=1"]);
    built(&env, &df, &["--build-arg", "N=2", "-o", "out.tar"]);
    let rootfs = unpacked(&env, &env.path().join("ctx/out.tar"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "1\n2\n"
    );
    assert!(!rootfs.join("cache").exists());

    // prune drops the layer snapshots RUN extracted (they come back when
    // needed) and keeps cache mounts; prune --all drops those too.
    let count = |d: &str| std::fs::read_dir(env.store().join(d)).map_or(0, |r| r.count());
    assert!(count("layers") > 0 && count("cache-mounts") == 1);
    assert_success(&env.run(&["prune"]), &["prune"]);
    assert_eq!((count("layers"), count("cache-mounts")), (0, 1));
    built(&env, &df, &["--build-arg", "N=3", "-o", "out.tar"]);
    let rootfs = unpacked(&env, &env.path().join("ctx/out.tar"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "1\n2\n3\n"
    );
    // What prune says it freed is what left the disk (du's count), the
    // extracted layers and the cache mount included, not only blobs.
    let du = || {
        let out = std::process::Command::new("du")
            .args(["-s", "--block-size=1"])
            .arg(env.store())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let before = du();
    let out = env.run(&["prune", "--all"]);
    assert_success(&out, &["prune --all"]);
    let freed = before - du();
    assert_eq!(count("cache-mounts"), 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let said = text
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("{text}"));
    let (num, unit) = said.split_at(said.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => panic!("unit {u}"),
    };
    let said = num.parse::<f64>().unwrap() * scale;
    assert!(
        freed > 1e6 && (said - freed).abs() <= freed * 0.05,
        "prune said {said} bytes, du saw {freed} go:\n{text}"
    );
}

crate::it_test!(run_layers_are_reproducible);
fn run_layers_are_reproducible() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let df = format!(
        "FROM {base}\nRUN mkdir -p /data && for i in $(seq 1 200); do echo $i > /data/f$i; done && ln /data/f1 /data/hard && ln -s f2 /data/soft\n"
    );
    built(&env, &df, &["-o", "one.tar"]);
    built(&env, &df, &["--no-cache", "-o", "two.tar"]);
    let one = std::fs::read(env.path().join("ctx/one.tar")).unwrap();
    assert_eq!(one, std::fs::read(env.path().join("ctx/two.tar")).unwrap());
    let listing = layer_listings(&env.path().join("ctx/one.tar"));
    assert!(
        listing[1].iter().all(|l| l.contains(" 1700000000 ")),
        "{:?}",
        &listing[1][..3]
    );
}

crate::it_test!(
    a_non_root_user_builds_through_a_user_namespace,
    needs = unprivileged_user_namespaces
);
fn a_non_root_user_builds_through_a_user_namespace() {
    let env = TestEnv::new();
    // The test env must be the user's: it owns the store and the context.
    let uid = 1000;
    chown_tree(env.path(), uid);
    // First with the single-id mapping any user gets; subordinate ids below.
    let single = std::cell::Cell::new(true);
    let setpriv = |args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        if single.get() {
            c.env("IMGBUILD_NO_SUBIDS", "1");
        }
        c.args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .current_dir(env.path())
        .env("IMGBUILD_STORE", env.store())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("HOME", env.path());
        c.output().expect("setpriv (util-linux)")
    };
    // The base, built by the user too.
    let root = env.path().join("base/rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "id", "echo", "cat", "mkdir", "chown", "chmod"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();

    env.write(
        "base/Dockerfile",
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n",
    );
    env.write(
        "ctx/Dockerfile",
        "FROM base:latest\nRUN id -u > /whoami && echo rootless > /note\n",
    );
    chown_tree(env.path(), uid);
    let out = setpriv(&[
        "build",
        "-q",
        "-t",
        "base:latest",
        "-o",
        "base/base.tar",
        "base",
    ]);
    assert_success(&out, &["rootless build of the base"]);
    let out = setpriv(&["build", "-t", "r:latest", "-o", "ctx/r.tar", "ctx"]);
    assert_success(&out, &["rootless build"]);
    let out = setpriv(&["run", "r:latest", "cat", "/whoami", "/note"]);
    assert_success(&out, &["rootless run"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\nrootless\n");
    // In the layer, the user's files belong to root.
    let listing = layer_listings(&env.path().join("ctx/r.tar"));
    assert!(
        listing[1].iter().all(|l| l.contains(" 0:0 ")),
        "{:?}",
        listing[1]
    );

    // A base with a device node: a user cannot make one, so extracting the
    // layer for the sandbox skips it, and says so.
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    layer.append_data(&mut h, "devnode", &[][..]).unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    layer.append_data(&mut h, "bin/sh", &busybox[..]).unwrap();
    oci_archive(
        &layer.into_inner().unwrap(),
        &env.path().join("ctx/dev.tar"),
    );
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:dev.tar\nRUN echo ok > /ok\n",
    );
    chown_tree(env.path(), uid);
    let out = setpriv(&["build", "-o", "ctx/devbase.tar", "ctx"]);
    assert_success(&out, &["rootless build on a base with a device node"]);
    assert!(
        stderr(&out).contains("devnode: device node skipped (not running as root)"),
        "{}",
        stderr(&out)
    );

    // With subordinate ids (.ci/run grants uid 1000 a range), other
    // container users exist: chown works, and a file only its owner may
    // read still lands in the layer with its owner.
    // Without subordinate ids no other user exists in the sandbox: a step or
    // a run as another user stops with what to do, not with EINVAL.
    env.write(
        "ctx/Dockerfile",
        "FROM base:latest\nUSER 1000:1000\nRUN id -u\n",
    );
    chown_tree(env.path(), uid);
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.split(':').nth(2) == Some("1000"))
        .and_then(|l| l.split(':').next())
        .unwrap_or("1000")
        .to_string();
    let fix = format!("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}");
    for (what, args) in [
        ("build", &["build", "-o", "ctx/user.tar", "ctx"][..]),
        ("run", &["run", "-u", "1000", "base:latest", "id", "-u"][..]),
    ] {
        let out = setpriv(args);
        assert!(!out.status.success(), "{what}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("USER 1000") && err.contains("/etc/subuid") && err.contains(&fix),
            "{what}: {err}"
        );
    }

    assert!(
        has_subids(1000),
        "uid 1000 has no subordinate ids: .ci/run grants them (1000:100000:65536 in /etc/subuid and /etc/subgid)"
    );
    single.set(false);
    env.write(
        "ctx/Dockerfile",
        "FROM base:latest\nRUN mkdir -p /home/app && echo secret > /home/app/key && chmod 600 /home/app/key && chmod 700 /home/app && chown -R 1000:1000 /home/app\n",
    );
    chown_tree(env.path(), uid);
    let out = setpriv(&["build", "-o", "ctx/ranged.tar", "ctx"]);
    assert_success(&out, &["rootless build with subordinate ids"]);
    let listing = layer_listings(&env.path().join("ctx/ranged.tar"));
    let line = |p: &str| {
        listing[1]
            .iter()
            .find(|l| l.starts_with(&format!("{p} ")))
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in {:?}", listing[1]))
    };
    assert!(
        line("home/app/").contains(" 700 1000:1000 "),
        "{:?}",
        listing[1]
    );
    assert!(
        line("home/app/key").contains(" 600 1000:1000 "),
        "{:?}",
        listing[1]
    );
    // Nothing of another id is left in the store for the user to trip on.
    assert_success(&setpriv(&["prune"]), &["rootless prune"]);
}

/// Why this machine cannot run the rootless tests: a kernel that refuses
/// user namespaces to ordinary users (`unshare -U` as uid 1000 fails).
pub fn unprivileged_user_namespaces() -> Option<String> {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "unshare",
            "-U",
            "true",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        _ => Some("this kernel refuses user namespaces to unprivileged users".into()),
    }
}

/// Whether /etc/subuid and /etc/subgid grant `uid` a range (by number or name).
pub fn has_subids(uid: u32) -> bool {
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .and_then(|l| l.split(':').next().map(str::to_string));
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().any(|l| {
                let owner = l.split(':').next().unwrap_or("");
                owner == uid.to_string() || Some(owner) == name.as_deref()
            })
        })
    })
}

fn chown_tree(p: &Path, uid: u32) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(uid));
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Processes whose command line is `sleep SECONDS`.
fn sleepers(seconds: &str) -> usize {
    let want = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == want.as_bytes())
        .count()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

crate::it_test!(no_process_outlives_its_step_or_the_build);
fn no_process_outlives_its_step_or_the_build() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    // Left running in the background: killed when the step ends.
    built(
        &env,
        &format!("FROM {base}\nRUN sleep 31337 & echo started\n"),
        &[],
    );
    wait_for("the background sleep to be gone", || sleepers("31337") == 0);

    // The build itself killed mid-RUN: the whole sandbox goes with it.
    env.write("ctx/Dockerfile", format!("FROM {base}\nRUN sleep 31338\n"));
    let mut child = env
        .cmd_in(&env.path().join("ctx"), &["build", "-q", "."])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the RUN to start", || sleepers("31338") == 1);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the sandbox to die with the build", || {
        sleepers("31338") == 0
    });
    assert!(mounts_under(env.path()).is_empty());
    assert_success(&env.run(&["store", "check"]), &["store check"]);
}

crate::it_test!(repeated_layers_and_a_relative_store_stay_on_the_overlay);
fn repeated_layers_and_a_relative_store_stay_on_the_overlay() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let ctx = env.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let tar = env.path().join("base/base.tar");
    let load = env.run_in(&ctx, &["--store", "rel", "load", tar.to_str().unwrap()]);
    assert_success(&load, &["load"]);
    // Two `RUN true`s leave the same empty layer twice in the stack, which
    // overlay refuses to name twice; a relative store path must survive the
    // sandbox changing directory.
    env.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nRUN true\nRUN true\nRUN echo hi > /x\nRUN true\nRUN cat /x\n"),
    );
    let out = env.run_in(&ctx, &["--store", "rel", "build", "--progress=plain", "."]);
    assert_success(&out, &["build"]);
    let log = stderr(&out);
    assert!(!log.contains("WARNING"), "{log}");
    assert!(log.lines().any(|l| l == "hi"), "{log}");
}

crate::it_test!(a_bind_mounts_content_is_part_of_the_run_steps_key);
fn a_bind_mounts_content_is_part_of_the_run_steps_key() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write("ctx/data.txt", "one\n");
    env.write("ctx/other.txt", "x\n");
    let df = format!(
        "FROM {base}\nRUN --mount=type=bind,source=data.txt,target=/data.txt cat /data.txt > /copy\n"
    );
    let first = steps(&built(&env, &df, &[]));
    // Unrelated context files do not matter; the bound one does.
    env.write("ctx/other.txt", "y\n");
    let again = steps(&built(&env, &df, &[]));
    assert!(again[1].1, "{again:?}");
    assert_eq!(again[1].2, first[1].2);
    env.write("ctx/data.txt", "two\n");
    let log = built(&env, &df, &["-o", "out.tar"]);
    let changed = steps(&log);
    assert!(!changed[1].1, "{log}");
    let rootfs = unpacked(&env, &env.path().join("ctx/out.tar"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copy")).unwrap(),
        "two\n"
    );
}
