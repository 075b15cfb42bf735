//! The store is private to its owner, and readers hold its lock.
//!
//! Issue 10: setuid-root files and device nodes of extracted layers sat
//! world-reachable in the store (another user ran one to read
//! /etc/shadow); `imgbuild run` took no lock, so a concurrent `prune`
//! deleted the files a running container was reading; a killed build's
//! temporary files stayed forever.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, assert_success, busybox_base, oci_archive, stderr};

/// Runs `program args` as uid/gid 1000 with no supplementary groups and no
/// capabilities. The program is started by a shell that already runs as that
/// user: setpriv itself resolves its program's path while it still holds
/// root's capabilities.
fn as_user(program: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .args(["--inh-caps=-all", "--", "/bin/busybox", "sh", "-c"])
        .arg(r#"exec "$0" "$@""#)
        .arg(program)
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn assert_denied(out: &Output, what: &str) {
    assert!(
        !out.status.success() && stderr(out).contains("Permission denied"),
        "{what}: another user must get EACCES, got {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// A layer with a setuid-root copy of busybox and a character device with
/// /dev/null's numbers, open to everyone (as a hostile image ships them).
fn hostile_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install busybox-static (see .ci/run)");
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, path, &[][..]).unwrap();
    };
    dir(&mut b, "bin");
    dir(&mut b, "dev");
    let mut h = tar::Header::new_ustar();
    h.set_size(busybox.len() as u64);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, "bin/sh", "busybox").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "dev/open", &[][..]).unwrap();
    b.into_inner().unwrap()
}

/// Every path under `root` (not following symlinks) whose name is `name`.
fn find(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

crate::it_test!(issue_10_setuid_files_and_devices_in_the_store_are_out_of_other_users_reach);
fn issue_10_setuid_files_and_devices_in_the_store_are_out_of_other_users_reach() {
    let env = TestEnv::new();
    // The way to the store is open (as a home directory often is), so only
    // the store's own permissions keep other users out.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = env.path().join("hostile.tar");
    oci_archive(&hostile_layer(), &archive);
    env.ok(&["load", archive.to_str().unwrap()]);
    // Extracted both ways: per-layer overlay lowers (run) and a merged
    // snapshot (COPY --from).
    env.ok(&["run", "hostile:latest", "/bin/busybox", "true"]);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY --from=hostile:latest /bin/busybox /b\n",
    );
    env.ok(&[
        "build",
        "-q",
        "-t",
        "copied:1",
        env.path().join("ctx").to_str().unwrap(),
    ]);

    let store = env.store();
    let setuid = find(&store, "busybox");
    let devices = find(&store, "open");
    assert!(
        setuid.iter().any(|p| p.starts_with(store.join("layers")))
            && setuid
                .iter()
                .any(|p| p.starts_with(store.join("snapshots"))),
        "the setuid file should be extracted in layers/ and snapshots/: {setuid:?}"
    );
    assert!(!devices.is_empty(), "the device node should be extracted");
    for p in &setuid {
        assert_eq!(mode(p), 0o4755, "{}", p.display());
    }
    let check_out_of_reach = || {
        for p in &setuid {
            // Executing the setuid-root binary would make uid 1000 root.
            assert_denied(&as_user(p, &["id", "-u"]), &format!("exec {}", p.display()));
        }
        for p in &devices {
            assert_denied(
                &as_user(Path::new("/bin/busybox"), &["cat", p.to_str().unwrap()]),
                &format!("open {}", p.display()),
            );
        }
    };
    check_out_of_reach();
    assert_eq!(mode(&store), 0o700);

    // A store left open by an older version is tightened when opened.
    for d in [
        "",
        "layers",
        "layers/trusted",
        "snapshots",
        "blobs",
        "blobs/sha256",
    ] {
        std::fs::set_permissions(store.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.ok(&["images"]);
    for d in [
        "",
        "layers",
        "layers/trusted",
        "snapshots",
        "blobs",
        "blobs/sha256",
    ] {
        assert_eq!(mode(&store.join(d)), 0o700, "{d}");
    }
    check_out_of_reach();
}

crate::it_test!(issue_10_a_rootless_users_store_is_private_too);
fn issue_10_a_rootless_users_store_is_private_too() {
    let env = TestEnv::new();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let store = env.path().join("user-store");
    let out = as_user(
        Path::new(env!("CARGO_BIN_EXE_imgbuild")),
        &["--store", store.to_str().unwrap(), "images"],
    );
    assert_success(&out, &["images as uid 1000"]);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&store).unwrap();
    assert_eq!((meta.uid(), mode(&store)), (1000, 0o700));
    for d in ["blobs", "images", "snapshots", "tmp"] {
        assert_eq!(mode(&store.join(d)), 0o700, "{d}");
    }
}

/// Spawns `imgbuild ARGS` on the env's store with piped output.
fn spawn(env: &TestEnv, args: &[&str]) -> std::process::Child {
    env.cmd_in(env.path(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls (up to 60 s) until `found` says yes.
fn wait_for(what: &str, mut found: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !found() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every file or directory under `dir` (any depth) whose name starts with
/// `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

crate::it_test!(issue_10_prune_waits_for_a_running_container);
fn issue_10_prune_waits_for_a_running_container() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let run = spawn(&env, &["run", base, "sh", "-c", "sleep 3; cat /etc/motd"]);
    // The container is up (its writable layer exists) before prune starts.
    wait_for("the container", || {
        !named(&env.store().join("tmp"), "container-").is_empty()
    });
    let prune = spawn(&env, &["prune", "--all"]);
    let run_done = std::thread::spawn(move || {
        let out = run.wait_with_output().unwrap();
        (out, Instant::now())
    });
    let prune_done = std::thread::spawn(move || {
        let out = prune.wait_with_output().unwrap();
        (out, Instant::now())
    });
    let (run_out, run_end) = run_done.join().unwrap();
    let (prune_out, prune_end) = prune_done.join().unwrap();
    assert_success(&run_out, &["run during prune"]);
    assert_eq!(String::from_utf8_lossy(&run_out.stdout), "welcome\n");
    assert_success(&prune_out, &["prune during run"]);
    assert!(
        prune_end >= run_end,
        "prune finished before the container it would have broken"
    );
    assert!(
        stderr(&prune_out).contains("waiting"),
        "{}",
        stderr(&prune_out)
    );
    // It did prune, after the container was done.
    assert!(named(&env.store().join("layers"), "").is_empty());
}

/// Deterministic incompressible bytes (xorshift), so compression takes time.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A context whose build takes a while: 48 MiB of noise to compress.
fn slow_context(env: &TestEnv) -> PathBuf {
    for i in 0..4u64 {
        env.write(&format!("ctx/data/part{i}.bin"), noise(12 << 20, i + 1));
    }
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY data /data/\n");
    env.path().join("ctx")
}

/// Regular files anywhere under the store's `tmp/`, but lock files.
fn tmp_files(store: &Path) -> Vec<PathBuf> {
    named(&store.join("tmp"), "")
        .into_iter()
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".lock"))
        .collect()
}

crate::it_test!(issue_10_a_killed_builds_temporary_files_are_reclaimed_by_the_next_process);
fn issue_10_a_killed_builds_temporary_files_are_reclaimed_by_the_next_process() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    let ctx = slow_context(&env);
    // Killed while a blob is being written.
    let mut build = spawn(&env, &["build", "-q", ctx.to_str().unwrap()]);
    wait_for("a blob being written", || {
        !named(&env.store().join("tmp"), "blob-").is_empty()
    });
    build.kill().unwrap();
    build.wait().unwrap();
    let leftovers = tmp_files(&env.store());
    assert!(
        !leftovers.is_empty(),
        "the kill should leave temporary files"
    );

    // A live process's temporary files are not touched.
    let run = spawn(&env, &["run", base, "sh", "-c", "sleep 2; echo still here"]);
    wait_for("the container", || {
        !named(&env.store().join("tmp"), "container-").is_empty()
    });
    let live = named(&env.store().join("tmp"), "container-");
    // Any command that opens the store reclaims what the dead one left.
    env.ok(&["images"]);
    for p in &leftovers {
        assert!(!p.exists(), "{} was not reclaimed", p.display());
    }
    for p in &live {
        assert!(p.exists(), "{} belongs to a live process", p.display());
    }
    let out = run.wait_with_output().unwrap();
    assert_success(&out, &["run beside the reclaim"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    // And the next build works.
    env.ok(&["build", "-q", ctx.to_str().unwrap()]);
    env.ok(&["images"]);
    assert!(
        tmp_files(&env.store()).is_empty(),
        "{:?}",
        tmp_files(&env.store())
    );
}

crate::it_test!(issue_10_a_killed_builds_output_sibling_is_reclaimed_by_the_next_build);
fn issue_10_a_killed_builds_output_sibling_is_reclaimed_by_the_next_build() {
    let env = TestEnv::new();
    let ctx = slow_context(&env);
    let out_dir = env.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("big.tar");
    let args = [
        "build",
        "-q",
        "-o",
        output.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ];
    // The first build, killed while it writes the archive.
    let mut build = spawn(&env, &args);
    wait_for("the archive being written", || {
        !named(&out_dir, ".big.tar.tmp-").is_empty()
    });
    build.kill().unwrap();
    build.wait().unwrap();
    assert!(
        !named(&out_dir, ".big.tar.tmp-").is_empty(),
        "the kill should leave the archive's temporary sibling"
    );
    // The next build of that output removes what the killed one left.
    env.ok(&args);
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["big.tar"]);
}
