//! Extraction keeps what the image says and nothing more (issue 10, item 7):
//! names that are not UTF-8 survive byte for byte through COPY, RUN diffs,
//! extraction and whiteouts; any depth of missing parents works; GNU and PAX
//! sparse files come out right; device and FIFO modes ignore the umask; an
//! image's `trusted.*` xattrs are dropped while `user.*` and
//! `security.capability` are kept.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::raw::RawTar;
use crate::util::{TestEnv, archive_layers, assert_success, oci_archive_of, stderr};

const APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "stat",
    "touch",
    "rm",
    "printf",
    "sha256sum",
];

/// The entry names (raw bytes) of every layer of an archive.
fn layer_names(archive: &Path) -> Vec<Vec<Vec<u8>>> {
    archive_layers(archive)
        .iter()
        .map(|l| {
            let mut a = tar::Archive::new(&l[..]);
            a.entries()
                .unwrap()
                .map(|e| e.unwrap().path_bytes().into_owned())
                .collect()
        })
        .collect()
}

fn load(env: &TestEnv, layers: &[&[u8]]) {
    let archive = env.path().join("img.tar");
    oci_archive_of(layers, &archive);
    env.ok(&["load", archive.to_str().unwrap()]);
}

fn build(env: &TestEnv, dockerfile: &str, out: &Path) {
    env.write("ctx/Dockerfile", dockerfile);
    let o = env.run_in(
        &env.path().join("ctx"),
        &["build", "-q", "-o", out.to_str().unwrap(), "."],
    );
    assert_success(&o, &["build", dockerfile]);
}

crate::it_test!(names_that_are_not_utf8_survive_byte_for_byte);
/// Context files and directories named in Latin-1, a base layer holding
/// such names, a RUN that makes one and deletes another: every layer
/// carries the exact bytes, the whiteout names the exact victim, and a
/// stage copied from shows the result.
fn names_that_are_not_utf8_survive_byte_for_byte() {
    let env = TestEnv::new();
    let base = RawTar::new()
        .busybox(APPLETS)
        .push(
            b"old-\xe9",
            tar::EntryType::Regular,
            b"",
            b"old",
            (0o644, 0),
        )
        .finish();
    load(&env, &[&base]);
    let ctx = env.path().join("ctx");
    std::fs::create_dir_all(ctx.join(OsStr::from_bytes(b"d\xff"))).unwrap();
    std::fs::write(ctx.join(OsStr::from_bytes(b"d\xff/caf\xe9")), "ctx").unwrap();
    let out = env.path().join("out.tar");
    build(
        &env,
        "FROM hostile:latest\n\
         ENV PATH=/bin\n\
         COPY . /c/\n\
         RUN touch \"/new-$(printf '\\351')\" && rm \"/old-$(printf '\\351')\"\n\
         FROM scratch\n\
         COPY --from=0 / /copy/\n",
        &out,
    );
    let names = layer_names(&out);
    let all: Vec<&Vec<u8>> = names.iter().flatten().collect();
    let has = |n: &[u8]| all.iter().any(|x| x.as_slice() == n);
    assert!(has(b"copy/c/d\xff/caf\xe9"), "{all:?}");
    assert!(has(b"copy/new-\xe9"), "{all:?}");
    assert!(
        !has(b"copy/old-\xe9"),
        "the whiteout missed its victim: {all:?}"
    );
    assert!(
        !all.iter()
            .any(|x| x.windows(3).any(|w| w == "\u{fffd}".as_bytes())),
        "a name was re-encoded: {all:?}"
    );

    // The intermediate image's own layers: the COPY and the RUN.
    let mid = env.path().join("mid.tar");
    build(
        &env,
        "FROM hostile:latest\n\
         ENV PATH=/bin\n\
         COPY . /c/\n\
         RUN touch \"/new-$(printf '\\351')\" && rm \"/old-$(printf '\\351')\"\n",
        &mid,
    );
    let names = layer_names(&mid);
    let copy: Vec<&[u8]> = names[1].iter().map(Vec::as_slice).collect();
    assert!(copy.contains(&&b"c/d\xff/caf\xe9"[..]), "{copy:?}");
    let run: Vec<&[u8]> = names[2].iter().map(Vec::as_slice).collect();
    assert!(run.contains(&&b"new-\xe9"[..]), "{run:?}");
    assert!(run.contains(&&b".wh.old-\xe9"[..]), "{run:?}");
}

crate::it_test!(more_than_forty_missing_parents_are_created);
/// A layer file 60 directories deep with none of them listed: extraction
/// creates them all (40 was the old limit).
fn more_than_forty_missing_parents_are_created() {
    let env = TestEnv::new();
    let deep: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    let name = format!("{}/leaf", deep.join("/"));
    let layer = RawTar::new()
        .pax(&[("path", name.as_bytes())])
        .file("placeholder", b"deep\n")
        .finish();
    load(&env, &[&layer]);
    let out = env.path().join("out.tar");
    build(
        &env,
        &format!("FROM scratch\nCOPY --from=hostile:latest /{name} /leaf\n"),
        &out,
    );
    let layers = archive_layers(&out);
    let mut a = tar::Archive::new(&layers[0][..]);
    let mut found = false;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"leaf" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "deep\n");
            found = true;
        }
    }
    assert!(found);
}

/// A sparse file with data at the start, in the middle and at the end.
fn sparse_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = dir.join("sparse");
    let mut want = vec![0u8; 3 << 20];
    want[..5].copy_from_slice(b"start");
    want[1 << 20..(1 << 20) + 6].copy_from_slice(b"middle");
    let n = want.len();
    want[n - 3..].copy_from_slice(b"end");
    let f = std::fs::File::create(&p).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", 1 << 20).unwrap();
    f.write_all_at(b"end", (n - 3) as u64).unwrap();
    (p, want)
}

crate::it_test!(gnu_and_pax_sparse_files_are_extracted_correctly);
/// GNU tar's four sparse encodings (the old GNU header, and PAX 0.0, 0.1
/// and 1.0), as base layers and as ADDed archives: the file comes out with
/// its bytes, under its own name, and with its holes.
fn gnu_and_pax_sparse_files_are_extracted_correctly() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (_, want) = sparse_file(&src);
    let formats: [(&str, &[&str]); 4] = [
        ("gnu", &["--format=gnu", "--sparse"]),
        ("pax00", &["--format=posix", "--sparse-version=0.0"]),
        ("pax01", &["--format=posix", "--sparse-version=0.1"]),
        ("pax10", &["--format=posix", "--sparse-version=1.0"]),
    ];
    for (name, flags) in formats {
        let tarball = env.path().join(format!("ctx/{name}.tar"));
        std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
        let out = Command::new("tar")
            .args(flags)
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("sparse")
            .output()
            .expect("GNU tar (Debian's tar package)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let layer = std::fs::read(&tarball).unwrap();
        load(&env, &[&layer]);
        let out_tar = env.path().join(format!("{name}-out.tar"));
        build(
            &env,
            &format!(
                "FROM scratch\n\
                 COPY --from=hostile:latest /sparse /from-layer\n\
                 ADD {name}.tar /added/\n"
            ),
            &out_tar,
        );
        let layers = archive_layers(&out_tar);
        for (layer, path) in [(&layers[0], "from-layer"), (&layers[1], "added/sparse")] {
            let mut a = tar::Archive::new(&layer[..]);
            let mut got = None;
            let mut names = Vec::new();
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let n = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                if n == path {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                    got = Some(v);
                }
                names.push(n);
            }
            let got = got.unwrap_or_else(|| panic!("{name}: no {path} in {names:?}"));
            assert!(got == want, "{name}: {path} has the wrong bytes");
        }
        // The snapshot COPY --from read from keeps the holes.
        let blocks: u64 = walk_files(&env.store().join("snapshots"))
            .iter()
            .filter(|p| p.file_name() == Some(OsStr::new("sparse")))
            .map(|p| std::fs::metadata(p).unwrap().blocks() * 512)
            .max()
            .unwrap_or(u64::MAX);
        assert!(
            blocks < want.len() as u64 / 2,
            "{name}: the extracted file has no holes ({blocks} bytes allocated)"
        );
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

crate::it_test!(device_and_fifo_modes_ignore_the_umask);
/// FIFOs, device nodes and directories get the image's modes even when
/// imgbuild runs under a strict umask (mknod's mode passes through it).
fn device_and_fifo_modes_ignore_the_umask() {
    let env = TestEnv::new();
    let layer = RawTar::new()
        .busybox(APPLETS)
        .node("fifo", tar::EntryType::Fifo, 0o666, (0, 0))
        .node("null", tar::EntryType::Char, 0o666, (1, 3))
        .push(b"open/", tar::EntryType::Directory, b"", b"", (0o777, 0))
        .push(
            b"implicit/deep/f",
            tar::EntryType::Regular,
            b"",
            b"x",
            (0o666, 0),
        )
        .finish();
    load(&env, &[&layer]);
    let cmd = env.cmd_in(
        env.path(),
        &[
            "run",
            "--network",
            "none",
            "hostile:latest",
            "/bin/stat",
            "-c",
            "%a %n",
            "/fifo",
            "/null",
            "/open",
            "/implicit",
            "/implicit/deep/f",
        ],
    );
    // The umask applies to the builder itself, which extracts the layer.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 077; exec \"$@\"")
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env_remove("SOURCE_DATE_EPOCH");
    let out = sh.output().unwrap();
    assert_success(&out, &["run", "stat"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "666 /fifo",
        "666 /null",
        "777 /open",
        "755 /implicit",
        "666 /implicit/deep/f",
    ] {
        assert!(
            text.contains(want),
            "want `{want}` in:\n{text}\n{}",
            stderr(&out)
        );
    }
}

crate::it_test!(trusted_xattrs_from_images_are_dropped_user_and_capabilities_kept);
/// An image layer that forges overlayfs's own `trusted.overlay.opaque` on a
/// directory would hide what lower layers put there (the OCI layer says
/// nothing of the kind); `trusted.*` is dropped, `user.*` and
/// `security.capability` are kept.
fn trusted_xattrs_from_images_are_dropped_user_and_capabilities_kept() {
    let env = TestEnv::new();
    let lower = RawTar::new()
        .busybox(APPLETS)
        .dir("d/", 0)
        .file("d/from-lower", b"lower\n")
        .finish();
    // A valid file capability (VFS_CAP_REVISION_2, cap_net_bind_service).
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0000u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    let upper = RawTar::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("d/", 0)
        .file("d/from-upper", b"upper\n")
        .pax(&[
            ("SCHILY.xattr.user.note", b"kept"),
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.trusted.forged", b"x"),
        ])
        .exe("bin/capped", b"#!/bin/sh\n")
        .finish();
    load(&env, &[&lower, &upper]);
    let out = env.run(&[
        "run",
        "--network",
        "none",
        "hostile:latest",
        "/bin/ls",
        "/d",
    ]);
    assert_success(&out, &["run", "ls /d"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from-lower") && text.contains("from-upper"),
        "a forged trusted.overlay.opaque hid the lower layer's files:\n{text}"
    );
    // The extracted layer in the store carries what it may.
    let capped: Vec<PathBuf> = walk_files(&env.store())
        .into_iter()
        .filter(|p| p.file_name() == Some(OsStr::new("capped")))
        .collect();
    assert!(!capped.is_empty());
    for p in capped {
        let mut buf = [0u8; 64];
        assert!(
            rustix::fs::getxattr(&p, "trusted.forged", &mut buf).is_err(),
            "{} kept trusted.forged",
            p.display()
        );
        let n = rustix::fs::getxattr(&p, "security.capability", &mut buf)
            .unwrap_or_else(|e| panic!("{}: security.capability lost: {e}", p.display()));
        assert_eq!(&buf[..n], &cap[..]);
        let n = rustix::fs::getxattr(&p, "user.note", &mut buf)
            .unwrap_or_else(|e| panic!("{}: user.note lost: {e}", p.display()));
        assert_eq!(&buf[..n], b"kept");
    }
}

crate::it_test!(trees_deeper_than_path_max_are_extracted_and_copied);
/// A base layer whose directory tree is deeper than `PATH_MAX` allows to
/// name in one go (3,000 levels, names past 6,000 bytes): it is extracted
/// under a RUN and into the snapshot a stage copies from, walked, and
/// copied, with no level lost. Every walk is iterative and descends one
/// open directory at a time.
fn trees_deeper_than_path_max_are_extracted_and_copied() {
    let env = TestEnv::new();
    let mut tar = RawTar::new().busybox(&["sh", "true", "test"]);
    let mut path = String::from("x");
    tar = tar.dir("x/", 0);
    for _ in 0..3000 {
        path.push_str("/d");
        tar = tar.pax(&[("path", path.as_bytes())]).dir("placeholder/", 0);
    }
    let leaf = format!("{path}/leaf");
    tar = tar
        .pax(&[("path", leaf.as_bytes())])
        .file("placeholder", b"deep\n");
    let base = tar.finish();
    load(&env, &[&base]);
    let out = env.path().join("out.tar");
    build(
        &env,
        "FROM hostile:latest\n\
         ENV PATH=/bin\n\
         RUN test -d /x/d/d/d && true\n\
         FROM scratch\n\
         COPY --from=0 /x/ /copy/\n",
        &out,
    );
    let names = layer_names(&out);
    let want = format!("copy{}/leaf", &path[1..]);
    assert!(
        names[0].iter().any(|n| n.as_slice() == want.as_bytes()),
        "the deepest file was lost; deepest name has {} bytes",
        names[0].iter().map(Vec::len).max().unwrap_or(0)
    );
}
