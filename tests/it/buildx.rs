//! Issue 15: `imgbuild build` as a drop-in for `docker buildx build` —
//! outputs in buildx's `-o type=…` syntax, each checked with the tools
//! that read it (skopeo, podman, tar, a registry).

use std::path::Path;
use std::process::Command;

use crate::registry::Registry;
use crate::util::{TestEnv, assert_success, stderr, tool};

/// A busybox-based context whose image has a file from the context and
/// one a RUN made.
fn context(env: &TestEnv) {
    crate::util::busybox_base(env);
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    std::fs::copy(
        env.path().join("base/base.tar"),
        env.path().join("ctx/base.tar"),
    )
    .unwrap();
    env.write("ctx/hello.txt", "hello\n");
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar\nCOPY hello.txt /app/hello.txt\n\
         RUN echo made > /app/made.txt && ln -s hello.txt /app/link\n",
    );
}

fn build(env: &TestEnv, store: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    all.push(".");
    let mut c = env.cmd_in(&env.path().join("ctx"), &all);
    c.env("IMGBUILD_STORE", env.path().join(store))
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c.output().unwrap()
}

/// `skopeo inspect --raw REF`: the manifest or index as stored.
fn skopeo_raw(reference: &str) -> String {
    tool(
        "skopeo",
        &["inspect", "--tls-verify=false", "--raw", reference],
    )
}

/// The member names of a tar file (or bytes), sorted.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    let mut names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

fn podman(env: &TestEnv, args: &[&str]) -> String {
    let proot = env.path().join("podman");
    let mut all = vec![
        "--root".to_string(),
        proot.join("root").display().to_string(),
        "--runroot".into(),
        proot.join("run").display().to_string(),
        "--storage-driver".into(),
        "vfs".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tool("podman", &refs)
}

crate::it_test!(issue_15_one_build_writes_every_output_type);
/// Item 1: several `-o` in one build, each of buildx's types, with what
/// reads it: an OCI and a docker archive (skopeo), the root filesystem as
/// a tarball and as a directory (with the RUN's file and symlink), and a
/// tar on standard output.
fn issue_15_one_build_writes_every_output_type() {
    let env = TestEnv::new();
    context(&env);
    let out = build(
        &env,
        "s",
        &[
            "-t",
            "app:1",
            "-o",
            "type=oci,dest=out/app.oci.tar",
            "-o",
            "type=docker,dest=out/app.docker.tar",
            "-o",
            "type=tar,dest=out/rootfs.tar",
            "-o",
            "type=local,dest=out/rootfs",
        ],
    );
    assert_success(&out, &["a build with four outputs"]);
    let dir = env.path().join("ctx/out");
    for (transport, file) in [
        ("oci-archive", "app.oci.tar"),
        ("docker-archive", "app.docker.tar"),
    ] {
        let raw = skopeo_raw(&format!("{transport}:{}", dir.join(file).display()));
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 3, "{file}: {raw}");
        let want = if transport == "oci-archive" {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/vnd.docker.distribution.manifest.v2+json"
        };
        assert_eq!(m["mediaType"], want, "{file}");
    }
    let names = tar_names(&std::fs::read(dir.join("rootfs.tar")).unwrap());
    for want in ["app/hello.txt", "app/made.txt", "app/link", "bin/busybox"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let root = dir.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app/made.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("app/link")).unwrap(),
        Path::new("hello.txt")
    );
    // The two filesystem outputs agree, and the tarball is reproducible.
    let again = build(&env, "s2", &["-o", "-"]);
    assert_success(&again, &["-o - (a tar on standard output)"]);
    assert_eq!(
        again.stdout,
        std::fs::read(dir.join("rootfs.tar")).unwrap(),
        "the same tar from another store"
    );
}

crate::it_test!(issue_15_zstd_layers_are_read_by_skopeo_and_podman);
/// Item 1: `compression=zstd` writes zstd layers (the build's own; the
/// base keeps gzip) that skopeo copies and podman loads and runs.
fn issue_15_zstd_layers_are_read_by_skopeo_and_podman() {
    let env = TestEnv::new();
    context(&env);
    let out = build(
        &env,
        "s",
        &["-t", "zapp:1", "-o", "type=oci,dest=z.tar,compression=zstd"],
    );
    assert_success(&out, &["a zstd build"]);
    let archive = env.path().join("ctx/z.tar");
    let raw = skopeo_raw(&format!("oci-archive:{}", archive.display()));
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    let copied = env.path().join("copied");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", archive.display()),
            &format!("dir:{}", copied.display()),
        ],
    );
    let loaded = podman(&env, &["load", "-i", archive.to_str().unwrap()]);
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("{loaded}"))
        .trim()
        .to_string();
    assert!(name.ends_with("zapp:1"), "{loaded}");
    let said = podman(
        &env,
        &[
            "run",
            "--rm",
            "--network=none",
            &name,
            "cat",
            "/app/hello.txt",
            "/app/made.txt",
        ],
    );
    assert_eq!(said, "hello\nmade\n");
}

crate::it_test!(issue_15_force_compression_recompresses_the_base_layers);
/// Item 1: `force-compression=true` puts every layer in the requested
/// compression, the base's too; the image ID (its diff_ids) does not
/// change, and podman runs the result.
fn issue_15_force_compression_recompresses_the_base_layers() {
    let env = TestEnv::new();
    context(&env);
    let plain = build(&env, "s", &["-q", "-o", "type=oci,dest=g.tar"]);
    assert_success(&plain, &["gzip"]);
    let out = build(
        &env,
        "s",
        &[
            "-q",
            "-t",
            "fz:1",
            "-o",
            "type=oci,dest=f.tar,compression=zstd,force-compression=true",
        ],
    );
    assert_success(&out, &["force-compression"]);
    assert_eq!(out.stdout, plain.stdout, "the same image ID");
    let archive = env.path().join("ctx/f.tar");
    let m: serde_json::Value =
        serde_json::from_str(&skopeo_raw(&format!("oci-archive:{}", archive.display()))).unwrap();
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types, ["application/vnd.oci.image.layer.v1.tar+zstd"; 3],
        "{m}"
    );
    // Again: the recompressed blobs are reused (none is written again:
    // a write would replace the file), and the archive is the same.
    let blobs = || -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
                std::fs::metadata(env.path().join("s/blobs/sha256").join(hex))
                    .unwrap()
                    .ino()
            })
            .collect()
    };
    let before = blobs();
    let out = build(
        &env,
        "s",
        &[
            "-q",
            "-t",
            "fz:1",
            "-o",
            "type=oci,dest=f2.tar,compression=zstd,force-compression=true",
        ],
    );
    assert_success(&out, &["force-compression again"]);
    assert_eq!(blobs(), before, "no layer recompressed twice");
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(env.path().join("ctx/f2.tar")).unwrap(),
        "the same archive"
    );
    let loaded = podman(&env, &["load", "-i", archive.to_str().unwrap()]);
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("{loaded}"))
        .trim()
        .to_string();
    let said = podman(
        &env,
        &["run", "--rm", "--network=none", &name, "cat", "/etc/motd"],
    );
    assert_eq!(said, "welcome\n");
    // Back to gzip, forced: the zstd-compressed step layers of a zstd
    // build come back as gzip.
    let out = build(
        &env,
        "s",
        &[
            "-o",
            "type=oci,dest=back.tar,compression=gzip,force-compression=true",
        ],
    );
    assert_success(&out, &["back to gzip"]);
    let m: serde_json::Value = serde_json::from_str(&skopeo_raw(&format!(
        "oci-archive:{}",
        env.path().join("ctx/back.tar").display()
    )))
    .unwrap();
    assert!(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "{m}"
    );
}

crate::it_test!(issue_15_type_registry_pushes_and_type_image_names);
/// Item 1: `type=registry,name=…` pushes (a registry on 127.0.0.1 then
/// serves the image), `type=image,name=…` only names it in the store.
fn issue_15_type_registry_pushes_and_type_image_names() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    context(&env);
    let name = format!("{}/team/app:1", reg.host());
    let out = build(
        &env,
        "s",
        &[
            "--insecure-registry",
            &reg.host(),
            "-o",
            &format!("type=registry,name={name}"),
        ],
    );
    assert_success(&out, &["type=registry"]);
    let raw = skopeo_raw(&format!("docker://{name}"));
    assert!(raw.contains("layers"), "{raw}");
    let out = build(&env, "s", &["-o", "type=image,name=local/app:2"]);
    assert_success(&out, &["type=image"]);
    let mut c = env.cmd_in(&env.path().join("ctx"), &["images"]);
    c.env("IMGBUILD_STORE", env.path().join("s"));
    let images = c.output().unwrap();
    let text = String::from_utf8_lossy(&images.stdout);
    assert!(text.contains("local/app"), "{text}");
    // No archive was written for either.
    let files: Vec<_> = std::fs::read_dir(env.path().join("ctx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tar") && n != "base.tar")
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

crate::it_test!(issue_15_a_bad_output_is_a_usage_error);
/// A `-o` imgbuild cannot write is exit 2 with what is wrong, before any work.
fn issue_15_a_bad_output_is_a_usage_error() {
    let env = TestEnv::new();
    context(&env);
    let out = build(&env, "s", &["-o", "type=oci"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-o type=oci: needs dest=FILE"),
        "{}",
        stderr(&out)
    );
    // -q and a tar on standard output would share it.
    let out = build(&env, "s", &["-q", "-o", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("-q"), "{}", stderr(&out));
}

crate::it_test!(issue_15_run_flags_reach_every_run_step);
/// Item 5: `--add-host`, `--ulimit` (lowered: root here cannot raise a
/// hard limit), `--shm-size` and `--label` do what docker's do, and a
/// RUN's key hears of the first three (another value runs it again).
fn issue_15_run_flags_reach_every_run_step() {
    let env = TestEnv::new();
    context(&env);
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar\n\
         RUN grep builder.test /etc/hosts > /hosts.txt; ulimit -n > /nofile.txt; ulimit -Hn >> /nofile.txt; \
         grep /dev/shm /proc/mounts > /shm.txt\n",
    );
    let flags = [
        "--add-host",
        "builder.test:10.1.2.3",
        "--add-host",
        "v6.builder.test=fd00::1",
        "--ulimit",
        "nofile=100:200",
        "--shm-size",
        "2m",
        "--label",
        "org.example.team=tools",
        "--label",
        "empty=",
    ];
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["-o", "type=local,dest=root", "-o", "type=oci,dest=app.tar"]);
    let out = build(&env, "s", &args);
    assert_success(&out, &["a build with RUN flags"]);
    let root = env.path().join("ctx/root");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
    assert_eq!(
        read("hosts.txt"),
        "10.1.2.3\tbuilder.test\nfd00::1\tv6.builder.test\n"
    );
    assert_eq!(read("nofile.txt"), "100\n200\n");
    assert!(
        read("shm.txt").contains("size=2048k"),
        "{}",
        read("shm.txt")
    );
    let config = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci-archive:{}", env.path().join("ctx/app.tar").display()),
        ],
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["Labels"]["org.example.team"], "tools");
    assert_eq!(config["config"]["Labels"]["empty"], "");
    // Labels are no step: the history has the base's entries and the RUN.
    let history = config["history"].as_array().unwrap();
    assert!(
        !history.iter().any(|h| h["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("org.example")),
        "{history:?}"
    );

    // The same flags: cached. Another ulimit: the RUN runs again.
    let mut again: Vec<&str> = flags.to_vec();
    again.extend(["-o", "type=oci,dest=app2.tar"]);
    let out = build(&env, "s", &again);
    assert!(stderr(&out).contains("Using cache"), "{}", stderr(&out));
    let mut other: Vec<&str> = flags.to_vec();
    other[5] = "nofile=90:200";
    let out = build(&env, "s", &other);
    assert_success(&out, &["another --ulimit"]);
    assert!(!stderr(&out).contains("Using cache"), "{}", stderr(&out));

    // Raising a hard limit past the caller's is a clear error.
    let out = build(&env, "s", &["--ulimit", "nofile=1048576000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ulimit nofile=1048576000:1048576000"),
        "{}",
        stderr(&out)
    );
}

crate::it_test!(issue_15_no_cache_filter_rebuilds_only_the_named_stage);
/// Item 5: `--no-cache-filter STAGE` runs that stage's steps again and
/// leaves the others cached; `-q` prints only the image ID.
fn issue_15_no_cache_filter_rebuilds_only_the_named_stage() {
    let env = TestEnv::new();
    context(&env);
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar AS tools\nRUN echo tool > /tool\n\
         FROM oci-archive:base.tar\nCOPY --from=tools /tool /tool\nRUN cat /tool > /copy\n",
    );
    let out = build(&env, "s", &[]);
    assert_success(&out, &["the first build"]);
    let out = build(&env, "s", &["--no-cache-filter", "tools"]);
    assert_success(&out, &["--no-cache-filter"]);
    let log = stderr(&out);
    assert!(log.contains("--no-cache-filter tools"), "{log}");
    // The tools stage ran again to the same file: the final stage's copy
    // hits by content, and the RUN after it too.
    assert_eq!(log.matches(" ---> Using cache").count(), 2, "{log}");

    let mut c = env.cmd_in(&env.path().join("ctx"), &["build", "-q", "."]);
    c.env("IMGBUILD_STORE", env.path().join("s"))
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &["-q"]);
    let id = String::from_utf8_lossy(&out.stdout);
    assert!(
        id.trim().starts_with("sha256:") && id.lines().count() == 1,
        "{id}"
    );
    assert_eq!(stderr(&out), "", "-q prints nothing else");
}

/// `imgbuild build ARGS…` in `ctx/` with `input` on standard input.
fn build_stdin(env: &TestEnv, store: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    let mut c = env.cmd_in(&env.path().join("ctx"), &all);
    c.env("IMGBUILD_STORE", env.path().join(store))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

crate::it_test!(issue_15_contexts_and_dockerfiles_from_standard_input);
/// Item 2: `build -` takes the context as a tar (plain or gzip) on
/// standard input, or a Dockerfile with no context; `-f -` the Dockerfile
/// with a context directory. Each gives the image a directory context
/// gives.
fn issue_15_contexts_and_dockerfiles_from_standard_input() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    env.write("ctx/a.txt", "alpha\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    let out = build(&env, "s", &["-o", "dir.tar"]);
    assert_success(&out, &["a directory context"]);
    let want = std::fs::read(env.path().join("ctx/dir.tar")).unwrap();
    let tar_of = |gzip: bool| {
        let mut c = Command::new("tar");
        c.arg("-C").arg(env.path().join("ctx"));
        if gzip {
            c.arg("-z");
        }
        c.args(["-c", "a.txt", "Dockerfile"]);
        let out = c.output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    for gzip in [false, true] {
        let out = build_stdin(&env, "s", &["-o", "../stdin.tar", "-"], &tar_of(gzip));
        assert_success(&out, &["a tar context on stdin"]);
        assert_eq!(
            std::fs::read(env.path().join("stdin.tar")).unwrap(),
            want,
            "gzip {gzip}"
        );
    }
    let out = build_stdin(
        &env,
        "s",
        &["-f", "-", "-o", "../f.tar", "."],
        b"FROM scratch\nCOPY a.txt /a.txt\n",
    );
    assert_success(&out, &["-f -"]);
    assert_eq!(std::fs::read(env.path().join("f.tar")).unwrap(), want);
    // A Dockerfile alone: no context, so a COPY finds nothing.
    let out = build_stdin(
        &env,
        "s",
        &["-o", "../l.tar", "-"],
        b"FROM scratch\nLABEL a=b\n",
    );
    assert_success(&out, &["a Dockerfile on stdin"]);
    let out = build_stdin(&env, "s", &["-"], b"FROM scratch\nCOPY a.txt /a.txt\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("a.txt"), "{}", stderr(&out));
    // Not both.
    let out = build_stdin(&env, "s", &["-f", "-", "-"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A hostile tar cannot write outside the context it becomes: a link
    // out, then a member through it.
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let evil = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, "escape", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "escape/evil", &b"bad"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let out = build_stdin(&env, "s", &["-"], &evil);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("standard input"), "{}", stderr(&out));
    assert!(!outside.join("evil").exists());
    // A Dockerfile that is a link to a host file is read inside the tar
    // (where it leads nowhere), never from the host.
    for target in ["/etc/passwd", "../../../../../../../../etc/passwd"] {
        let linked = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, "Dockerfile", target).unwrap();
            b.into_inner().unwrap()
        };
        let out = build_stdin(&env, "s", &["-"], &linked);
        assert_ne!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("root:x:0:0"),
            "{target}: {}",
            stderr(&out)
        );
    }
}

crate::it_test!(issue_15_named_contexts_stand_for_what_the_dockerfile_names);
/// Item 2: `--build-context NAME=…` puts a directory, an image by name
/// (`docker-image://`) or an image of an OCI layout (`oci-layout://`, by
/// tag or digest) wherever the Dockerfile names NAME: `FROM NAME`, `COPY
/// --from=NAME`, and a stage `AS NAME`, which it replaces (its steps do
/// not run), as BuildKit does.
fn issue_15_named_contexts_stand_for_what_the_dockerfile_names() {
    let env = TestEnv::new();
    crate::util::busybox_base(&env);
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    env.write("tools/bin/tool", "#!/bin/sh\necho tool\n");
    env.write("gen/out.txt", "generated elsewhere\n");
    env.write("root/etc/os-release", "ID=dir\n");
    let store = env.store();
    let store = store.file_name().unwrap().to_str().unwrap().to_string();
    let rootfs = |out: &str| env.path().join("ctx").join(out);

    // An image by name and a directory, in FROM and COPY --from; a stage
    // replaced by a directory: its failing RUN never runs.
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS gen\nRUN exit 1\n\
         FROM busybox\nCOPY --from=tools /bin/tool /usr/local/bin/tool\n\
         COPY --from=gen /out.txt /out.txt\n",
    );
    let out = build(
        &env,
        &store,
        &[
            "--build-context",
            "busybox=docker-image://base:latest",
            "--build-context",
            "tools=../tools",
            "--build-context",
            "gen=../gen",
            "-o",
            "type=local,dest=a",
        ],
    );
    assert_success(&out, &["docker-image:// and directories"]);
    assert!(!stderr(&out).contains("exit 1"), "{}", stderr(&out));
    assert!(rootfs("a/bin/busybox").is_file(), "the base is the image");
    assert_eq!(
        std::fs::read_to_string(rootfs("a/usr/local/bin/tool")).unwrap(),
        "#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs("a/out.txt")).unwrap(),
        "generated elsewhere\n"
    );
    // Unchanged named contexts: every step from the cache; a changed file
    // in one: its copy runs again.
    let again = |tag: &str| {
        build(
            &env,
            &store,
            &[
                "--build-context",
                "busybox=docker-image://base:latest",
                "--build-context",
                "tools=../tools",
                "--build-context",
                "gen=../gen",
                "-o",
                &format!("type=local,dest={tag}"),
            ],
        )
    };
    let out = again("b");
    assert_success(&out, &["again"]);
    assert_eq!(
        stderr(&out).matches(" ---> Using cache").count(),
        2,
        "{}",
        stderr(&out)
    );
    env.write("tools/bin/tool", "#!/bin/sh\necho tool 2\n");
    let out = again("c");
    assert_success(&out, &["a tool changed"]);
    assert_eq!(
        stderr(&out).matches(" ---> Using cache").count(),
        0,
        "{}",
        stderr(&out)
    );

    // A directory as a base: its files are the image's root filesystem.
    // (Also a stage replaced in a FROM: `rootdir`'s RUN never runs.)
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS rootdir\nRUN exit 1\nFROM rootdir\nCOPY --from=gen out.txt /\n",
    );
    let out = build(
        &env,
        &store,
        &[
            "--build-context",
            "rootdir=../root",
            "--build-context",
            "gen=../gen",
            "-o",
            "type=local,dest=d",
        ],
    );
    assert_success(&out, &["a directory as a base"]);
    assert_eq!(
        std::fs::read_to_string(rootfs("d/etc/os-release")).unwrap(),
        "ID=dir\n"
    );
    assert!(rootfs("d/out.txt").is_file());

    // An OCI layout, by tag and by manifest digest; the name matches the
    // FROM however it is spelled (docker.io/library/…:latest).
    let layout = env.path().join("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci-archive:{}", env.path().join("base/base.tar").display()),
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    env.write(
        "ctx/Dockerfile",
        "FROM docker.io/library/alpine:latest\nCOPY --from=gen out.txt /\n",
    );
    for (i, value) in [
        format!("oci-layout://{}:v1", layout.display()),
        format!("oci-layout://{}@{digest}", layout.display()),
    ]
    .iter()
    .enumerate()
    {
        let dest = format!("type=local,dest=l{i}");
        let ctx = format!("alpine={value}");
        let out = build(
            &env,
            &store,
            &[
                "--build-context",
                &ctx,
                "--build-context",
                "gen=../gen",
                "-o",
                &dest,
            ],
        );
        assert_success(&out, &[value.as_str()]);
        assert!(rootfs(&format!("l{i}/bin/busybox")).is_file(), "{value}");
        assert!(rootfs(&format!("l{i}/out.txt")).is_file(), "{value}");
    }

    // What cannot be used: a clear usage error.
    for bad in [
        "noequals",
        "x=https://example.com/repo.git",
        "x=oci-layout://",
        "x=docker-image://UPPER",
    ] {
        let out = build(&env, &store, &["--build-context", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--build-context"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    let out = build(&env, &store, &["--build-context", "gen=../missing"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("gen"), "{}", stderr(&out));
}

crate::it_test!(issue_15_annotations_reach_manifests_and_indexes);
/// Item 5: `--annotation` puts KEY=VALUE in the output's manifest (all
/// platforms', or one platform's with `manifest[os/arch]:`) and, with
/// `index:`, in its multi-platform index: in the archive, as skopeo reads
/// it, and in what is pushed. The image ID does not change.
fn issue_15_annotations_reach_manifests_and_indexes() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    env.write("ctx/a.txt", "alpha\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    let raw = |archive: &str| -> serde_json::Value {
        let path = env.path().join("ctx").join(archive);
        serde_json::from_str(&skopeo_raw(&format!("oci-archive:{}", path.display()))).unwrap()
    };
    let plain = build(&env, "s", &["-q", "-o", "plain.tar"]);
    assert_success(&plain, &["no annotations"]);
    let out = build(
        &env,
        "s",
        &[
            "-q",
            "--annotation",
            "org.opencontainers.image.title=app",
            "--annotation",
            "manifest:com.example.team=core",
            "-o",
            "annotated.tar",
        ],
    );
    assert_success(&out, &["manifest annotations"]);
    assert_eq!(out.stdout, plain.stdout, "the image ID is the same");
    let m = raw("annotated.tar");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.title"], "app",
        "{m}"
    );
    assert_eq!(m["annotations"]["com.example.team"], "core", "{m}");
    assert!(raw("plain.tar").get("annotations").is_none());

    // Several platforms: the index's, and one platform's manifest.
    let reg = Registry::start(&env, false);
    let name = format!("{}/team/app:multi", reg.host());
    let out = build(
        &env,
        "s",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--annotation",
            "index:com.example.index=yes",
            "--annotation",
            "manifest[linux/arm64]:com.example.arch=arm",
            "--insecure-registry",
            &reg.host(),
            "-o",
            "multi.tar",
            "-o",
            &format!("type=registry,name={name}"),
        ],
    );
    assert_success(&out, &["index annotations"]);
    let pushed: serde_json::Value =
        serde_json::from_str(&skopeo_raw(&format!("docker://{name}"))).unwrap();
    for index in [raw("multi.tar"), pushed] {
        assert_eq!(index["annotations"]["com.example.index"], "yes", "{index}");
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2, "{index}");
    }
    // Every manifest the registry holds for the index, by digest.
    let index: serde_json::Value =
        serde_json::from_str(&skopeo_raw(&format!("docker://{name}"))).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let digest = m["digest"].as_str().unwrap();
        let repo = name.rsplit_once(':').unwrap().0;
        let manifest: serde_json::Value =
            serde_json::from_str(&skopeo_raw(&format!("docker://{repo}@{digest}"))).unwrap();
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let want = (arch == "arm64").then_some("arm");
        assert_eq!(
            manifest["annotations"]["com.example.arch"].as_str(),
            want,
            "{arch}: {manifest}"
        );
    }

    // Usage errors.
    for bad in [
        "nokey",
        "manifest-descriptor:k=v",
        "bogus:k=v",
        "index[linux/amd64]:k=v",
    ] {
        let out = build(&env, "s", &["--annotation", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--annotation"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    let out = build(&env, "s", &["--annotation", "index:k=v", "-o", "x.tar"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("multi-platform"), "{}", stderr(&out));
}
