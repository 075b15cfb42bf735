//! Every path from a layer, a context or an ADDed archive resolves inside its
//! root (issue 10, item 1): symlinks, hard links, `..` and absolute names in
//! any of them, and races that swap a file for a symlink, never make the
//! builder read, write, remove or touch anything outside.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::As;
use super::raw::RawTar;
use crate::util::{TestEnv, archive_layers, assert_success, busybox_base, oci_archive, stderr};

/// Every byte of every layer of an archive, for "does the secret appear?".
fn all_layer_bytes(archive: &Path) -> Vec<u8> {
    archive_layers(archive).concat()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A host directory outside every root, holding a secret.
fn host_secret(env: &TestEnv, content: &[u8]) -> PathBuf {
    let dir = env.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), content).unwrap();
    dir
}

crate::it_test!(add_archive_members_never_read_the_host);
/// An ADDed local archive whose `e` is a symlink to a host directory and
/// whose `e/secret` then names a file through it (the shape that put the
/// host's `/etc/shadow` into a layer), plus `..`, absolute and hard-link
/// members aimed outside. The layer holds the archive's bytes, and only
/// those, under the destination.
fn add_archive_members_never_read_the_host() {
    for who in As::ALL {
        add_archive_case(who);
    }
}

fn add_archive_case(who: As) {
    let env = TestEnv::new();
    let host = host_secret(&env, b"HOST-SECRET-ADD\n");
    let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    let archive = RawTar::new()
        .symlink("e", host.to_str().unwrap())
        .file("e/secret", b"from-the-archive\n")
        .symlink("etc", "/etc")
        .file("etc/shadow", b"archive-shadow\n")
        .file("../../../../../../escape-dotdot", b"dotdot\n")
        .file("/escape-absolute", b"absolute\n")
        .hardlink("passwd-link", "../../../../../etc/passwd")
        .finish();
    env.write("ctx/evil.tar", &archive);
    env.write("ctx/Dockerfile", "FROM scratch\nADD evil.tar /x/\n");
    let out_tar = env.path().join("out.tar");
    let out = who.run(
        &env,
        &env.path().join("ctx"),
        &["build", "-q", "-o", out_tar.to_str().unwrap(), "."],
    );
    // The hard link names a file the archive does not have: refusing the
    // archive is right; so is building without it. Either way nothing of
    // the host may reach a layer.
    if out.status.success() {
        let bytes = all_layer_bytes(&out_tar);
        assert!(
            !contains(&bytes, b"HOST-SECRET-ADD"),
            "the host file behind the archive's symlink went into the layer"
        );
        assert!(contains(&bytes, b"from-the-archive"));
        if !shadow.is_empty() {
            assert!(
                !contains(&bytes, &shadow),
                "the host's /etc/shadow went into the layer"
            );
        }
        let passwd = std::fs::read("/etc/passwd").unwrap();
        assert!(
            !contains(&bytes, &passwd),
            "the host's /etc/passwd went into the layer"
        );
    } else {
        let err = stderr(&out);
        assert!(!err.contains("HOST-SECRET-ADD"), "{who:?}: {err}");
    }
    assert_eq!(
        std::fs::read(host.join("secret")).unwrap(),
        b"HOST-SECRET-ADD\n"
    );
    assert!(!Path::new("/escape-dotdot").exists() && !Path::new("/escape-absolute").exists());

    // Without the hard link the archive builds, and its own bytes land
    // where its symlinks say, inside the destination.
    let archive = RawTar::new()
        .symlink("e", host.to_str().unwrap())
        .file("e/secret", b"from-the-archive\n")
        .file("../../escape-dotdot", b"dotdot\n")
        .finish();
    env.write("ctx/evil.tar", &archive);
    let out = who.run(
        &env,
        &env.path().join("ctx"),
        &["build", "-q", "-o", out_tar.to_str().unwrap(), "."],
    );
    assert_success(&out, &["build", "ADD evil.tar", &format!("{who:?}")]);
    let bytes = all_layer_bytes(&out_tar);
    assert!(!contains(&bytes, b"HOST-SECRET-ADD"));
    assert!(contains(&bytes, b"from-the-archive"));
    assert!(contains(&bytes, b"x/escape-dotdot"));
}

crate::it_test!(extraction_never_touches_host_metadata_through_a_late_symlink);
/// A base layer that makes `a/x` a directory with an old mtime, then turns
/// `a` into a symlink to a host directory: restoring directory times after
/// extraction must not follow it (it used to set the host's `x` to the
/// layer's mtime).
fn extraction_never_touches_host_metadata_through_a_late_symlink() {
    let env = TestEnv::new();
    let victim = env.path().join("victim");
    std::fs::create_dir_all(victim.join("x")).unwrap();
    let before = std::fs::metadata(victim.join("x")).unwrap().mtime();
    let layer = RawTar::new()
        .dir("a/", 7)
        .dir("a/x/", 7)
        .symlink("a", victim.to_str().unwrap())
        .file("bin/x", b"x")
        .finish();
    let archive = env.path().join("img.tar");
    oci_archive(&layer, &archive);
    env.ok(&["load", archive.to_str().unwrap()]);
    // Extracted both ways: per-layer (run) and merged (COPY --from).
    let _ = env.run(&["run", "hostile:latest"]);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY --from=hostile:latest /bin/x /x\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["build", "-q", "."]);
    assert_success(&out, &["build", "COPY --from"]);
    let after = std::fs::metadata(victim.join("x")).unwrap().mtime();
    assert_eq!(
        after, before,
        "extraction changed the mtime of a host directory"
    );
    assert_ne!(after, 7);
}

crate::it_test!(run_cannot_redirect_mount_point_cleanup_to_the_host);
/// A RUN that moves a directory the sandbox made for a mount point and puts
/// a symlink to a host directory in its place: cleaning up mount points
/// afterwards must not follow it (it used to delete the host's empty files
/// and directories of the same names).
fn run_cannot_redirect_mount_point_cleanup_to_the_host() {
    for who in As::ALL {
        mount_point_cleanup_case(who);
    }
}

fn mount_point_cleanup_case(who: As) {
    let env = TestEnv::new();
    // An image without /etc: the sandbox creates etc, etc/hosts and
    // etc/resolv.conf to mount on.
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut tar = RawTar::new().dir("bin/", 0).exe("bin/busybox", &busybox);
    for applet in ["sh", "mv", "ln", "mkdir"] {
        tar = tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    let layer = tar.finish();
    let archive = env.path().join("img.tar");
    oci_archive(&layer, &archive);
    let out = who.run(&env, env.path(), &["load", archive.to_str().unwrap()]);
    assert_success(&out, &["load", &format!("{who:?}")]);

    let victim = env.path().join("victim");
    std::fs::create_dir_all(victim.join("mnt-target/deeper")).unwrap();
    std::fs::write(victim.join("hosts"), "").unwrap();
    std::fs::write(victim.join("resolv.conf"), "").unwrap();
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM hostile:latest\n\
             ENV PATH=/bin\n\
             RUN --mount=type=tmpfs,target=/m/mnt-target/deeper \
             mv /etc /etc.moved && ln -s {v} /etc && mv /m /m.moved && ln -s {v} /m\n",
            v = victim.display()
        ),
    );
    let out = who.run(&env, &env.path().join("ctx"), &["build", "-q", "."]);
    assert_success(&out, &["build", "RUN mv", &format!("{who:?}")]);
    for p in ["hosts", "resolv.conf", "mnt-target/deeper", "mnt-target"] {
        assert!(
            victim.join(p).exists(),
            "{who:?}: cleaning up mount points removed the host's {p}"
        );
    }
}

crate::it_test!(context_files_swapped_for_symlinks_never_leak_the_host);
/// A context whose files turn into symlinks to a host secret while the
/// build runs (another process swapping them): the builder reads each file
/// through the context, so it gets the file, a clear error, or nothing —
/// never the secret. Named directly, walked inside a directory, and bound
/// into a RUN.
fn context_files_swapped_for_symlinks_never_leak_the_host() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    // Same size as the honest content, so a size check cannot catch it.
    let host = host_secret(&env, b"HOST-SECRET-CTX\n");
    let ctx = env.path().join("ctx");
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    let honest = b"honest-content!\n";
    assert_eq!(honest.len(), b"HOST-SECRET-CTX\n".len());
    for f in ["f", "dir/f"] {
        std::fs::write(ctx.join(f), honest).unwrap();
        std::os::unix::fs::symlink(host.join("secret"), ctx.join(format!("{f}.link"))).unwrap();
    }
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM {base}\n\
             COPY f /f\n\
             COPY dir/ /dir/\n\
             RUN --mount=type=bind,source=f,target=/mnt/f cat /mnt/f > /bound\n"
        ),
    );
    env.write("ctx/.dockerignore", "*.link\n**/*.link\n");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for f in ["f", "dir/f"] {
                    // Atomically exchange the file and the symlink.
                    let _ = rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        ctx.join(f),
                        rustix::fs::CWD,
                        ctx.join(format!("{f}.link")),
                        rustix::fs::RenameFlags::EXCHANGE,
                    );
                }
                n += 1;
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let out_tar = env.path().join("out.tar");
    let out_arg = out_tar.to_str().unwrap();
    let build = || env.run_in(&ctx, &["build", "-q", "--no-cache", "-o", out_arg, "."]);
    let mut built = 0;
    for _ in 0..30 {
        let out = build();
        let err = stderr(&out);
        assert!(!err.contains("HOST-SECRET"), "{err}");
        assert!(
            !err.contains("panicked"),
            "a swapped context file made the builder panic: {err}"
        );
        if out.status.success() {
            built += 1;
            let bytes = all_layer_bytes(&out_tar);
            assert!(
                !contains(&bytes, b"HOST-SECRET-CTX"),
                "a context file swapped for a symlink leaked the host file into a layer"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    // Whether any build under the swapper saw three honest reads in a row is
    // chance (each read meets either state), so that is not asserted; what
    // is asserted is that the same context, once it holds still, builds and
    // carries the honest bytes: the failures above were the swap, not the
    // Dockerfile.
    eprintln!("{built} of 30 builds got through while the context changed");
    for f in ["f", "dir/f"] {
        if std::fs::symlink_metadata(ctx.join(f))
            .unwrap()
            .file_type()
            .is_symlink()
        {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                ctx.join(f),
                rustix::fs::CWD,
                ctx.join(format!("{f}.link")),
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .unwrap();
        }
    }
    let out = build();
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = all_layer_bytes(&out_tar);
    assert!(contains(&bytes, honest), "the honest context was not built");
    assert!(!contains(&bytes, b"HOST-SECRET-CTX"));
    let mut s = String::new();
    std::fs::File::open(host.join("secret"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "HOST-SECRET-CTX\n");
}

crate::it_test!(layout_blobs_that_link_to_host_files_are_not_read);
/// An OCI layout directory (a `load` source, an `oci:` base) whose blobs
/// are absolute symlinks to host files: the files hold exactly the right
/// bytes, so only confinement keeps the builder from reading them. Inside
/// the layout's root the links lead nowhere, the load is refused, and the
/// store holds nothing; the same layout with its real blobs loads.
fn layout_blobs_that_link_to_host_files_are_not_read() {
    let env = TestEnv::new();
    let mut layer = RawTar::new().file("hello", b"from-the-layout\n").finish();
    layer.resize(layer.len().next_multiple_of(10240), 0);
    let archive = env.path().join("img.tar");
    crate::util::oci_archive_of(&[&layer], &archive);
    let layout = env.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let blobs = layout.join("blobs/sha256");
    let host = env.path().join("host-blobs");
    std::fs::create_dir_all(&host).unwrap();
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let outside = host.join(p.file_name().unwrap());
        std::fs::rename(&p, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &p).unwrap();
    }
    let out = env.run(&["load", layout.to_str().unwrap()]);
    assert!(!out.status.success(), "a linked layout loaded");
    assert!(
        stderr(&out).contains("blobs/sha256"),
        "the error names the blob: {}",
        stderr(&out)
    );
    let images = env.run(&["images", "-q"]);
    assert_success(&images, &["images"]);
    assert!(
        String::from_utf8_lossy(&images.stdout).trim().is_empty(),
        "something was stored"
    );
    // The same bytes as the layout's own files load.
    for e in std::fs::read_dir(&host).unwrap() {
        let p = e.unwrap().path();
        let inside = blobs.join(p.file_name().unwrap());
        std::fs::remove_file(&inside).unwrap();
        std::fs::rename(&p, &inside).unwrap();
    }
    assert_success(&env.run(&["load", layout.to_str().unwrap()]), &["load"]);
}
