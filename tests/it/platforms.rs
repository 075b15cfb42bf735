//! Multi-platform builds (issue 14): one build, one index, a manifest per
//! platform; stages that do not depend on the platform built once; bases
//! chosen per platform; one platform alone is a plain archive podman loads.

use std::path::Path;

use crate::util::{TestEnv, assert_success, stderr, tool};

/// A context with a file and a Dockerfile.
fn context(env: &TestEnv, dockerfile: &str) -> std::path::PathBuf {
    env.write("ctx/a.txt", "hello\n");
    env.write("ctx/Dockerfile", dockerfile);
    env.path().join("ctx")
}

fn build(env: &TestEnv, args: &[&str]) -> String {
    let mut c = env.cmd_in(env.path(), args);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, args);
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

fn raw_index(archive: &Path) -> serde_json::Value {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", archive.display()),
        ],
    );
    serde_json::from_str(&raw).unwrap()
}

/// The config skopeo picks for `arch` from the OCI archive at `archive`
/// (an index or a single image), as a user would read it.
pub(crate) fn config_for(archive: &Path, arch: &str) -> serde_json::Value {
    let r = format!("oci-archive:{}", archive.display());
    let cfg = tool(
        "skopeo",
        &["inspect", "--override-arch", arch, "--config", &r],
    );
    serde_json::from_str(&cfg).unwrap()
}

fn archive_names(archive: &Path) -> Vec<String> {
    let f = std::fs::File::open(archive).unwrap();
    tar::Archive::new(f)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

crate::it_test!(two_platforms_make_one_index_and_share_the_copy);
fn two_platforms_make_one_index_and_share_the_copy() {
    let env = TestEnv::new();
    let ctx = context(&env, "FROM scratch\nCOPY a.txt /a.txt\nCMD [\"/a\"]\n");
    let log = build(
        &env,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "mp:1",
            "-o",
            "out.tar",
            ctx.to_str().unwrap(),
        ],
    );
    // The copy does not depend on the platform: one stage, one COPY.
    assert_eq!(log.matches("COPY a.txt /a.txt").count(), 1, "{log}");
    let archive = env.path().join("out.tar");
    let index = raw_index(&archive);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // One platform per manifest.json cannot be said: OCI only.
    assert!(!archive_names(&archive).contains(&"manifest.json".to_string()));
    // skopeo picks each platform; each config names its own.
    for arch in ["amd64", "arm64"] {
        let cfg = config_for(&archive, arch);
        assert_eq!(cfg["architecture"], arch, "{cfg}");
    }
    let copied = env.path().join("arm64-dir");
    tool(
        "skopeo",
        &[
            "copy",
            "--override-arch",
            "arm64",
            &format!("oci-archive:{}", archive.display()),
            &format!("dir:{}", copied.display()),
        ],
    );
    assert!(copied.join("manifest.json").is_file());

    // Byte-identical across runs, directories and -j.
    let other = TestEnv::new();
    let ctx2 = context(&other, "FROM scratch\nCOPY a.txt /a.txt\nCMD [\"/a\"]\n");
    build(
        &other,
        &[
            "build",
            "-j1",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "mp:1",
            "-o",
            "again.tar",
            ctx2.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(other.path().join("again.tar")).unwrap()
    );
}

crate::it_test!(platform_args_are_expanded_per_platform);
fn platform_args_are_expanded_per_platform() {
    let env = TestEnv::new();
    let ctx = context(
        &env,
        "FROM --platform=$BUILDPLATFORM scratch AS tools\n\
         ARG TARGETARCH BUILDARCH\n\
         LABEL built-on=$BUILDARCH\n\
         COPY a.txt /tool\n\
         FROM scratch\n\
         ARG TARGETPLATFORM TARGETARCH TARGETVARIANT\n\
         COPY --from=tools /tool /tool-$TARGETARCH\n\
         LABEL target=$TARGETPLATFORM variant=$TARGETVARIANT\n",
    );
    let log = build(
        &env,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/arm64/v8,linux/armhf",
            "-o",
            "out.tar",
            ctx.to_str().unwrap(),
        ],
    );
    // The $BUILDPLATFORM stage is built once for both targets.
    let host = imgbuild::platform::host();
    let built_on = format!("LABEL built-on={}", host.arch);
    assert_eq!(log.matches(&built_on).count(), 1, "{log}");
    let archive = env.path().join("out.tar");
    let mut layers = Vec::new();
    for (arch, variant, target) in [("arm64", "", "linux/arm64"), ("arm", "v7", "linux/arm/v7")] {
        let mut args = vec!["inspect", "--override-arch", arch, "--config"];
        if !variant.is_empty() {
            args.extend(["--override-variant", variant]);
        }
        let r = format!("oci-archive:{}", archive.display());
        args.push(&r);
        let cfg: serde_json::Value = serde_json::from_str(&tool("skopeo", &args)).unwrap();
        assert_eq!(cfg["config"]["Labels"]["target"], target, "{cfg}");
        assert_eq!(cfg["config"]["Labels"]["variant"], variant, "{cfg}");
        assert_eq!(cfg["architecture"], arch);
        // Built once on the build platform, for both targets.
        let tool_layer = &cfg["rootfs"]["diff_ids"][0];
        assert!(tool_layer.is_string(), "{cfg}");
        // One layer: the copy, to /tool-$TARGETARCH.
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            1,
            "{cfg}"
        );
        layers.push(tool_layer.clone());
    }
    // The copies' destinations differ per target, so their layers do.
    assert_ne!(layers[0], layers[1]);
}

crate::it_test!(one_platform_is_a_plain_archive_podman_loads);
fn one_platform_is_a_plain_archive_podman_loads() {
    let env = TestEnv::new();
    let ctx = context(&env, "FROM scratch\nCOPY a.txt /a.txt\n");
    build(
        &env,
        &[
            "build",
            "--platform",
            "linux/arm64",
            "-t",
            "one:arm",
            "-o",
            "arm.tar",
            ctx.to_str().unwrap(),
        ],
    );
    let archive = env.path().join("arm.tar");
    assert!(archive_names(&archive).contains(&"manifest.json".to_string()));
    let proot = env.path().join("podman");
    let root = proot.join("root").display().to_string();
    let run = proot.join("run").display().to_string();
    let p = |args: &[&str]| {
        let mut all = vec![
            "--root",
            &root,
            "--runroot",
            &run,
            "--storage-driver",
            "vfs",
        ];
        all.extend(args);
        tool("podman", &all)
    };
    p(&["load", "-i", archive.to_str().unwrap()]);
    let arch = p(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        "one:arm",
    ]);
    assert_eq!(arch.trim(), "arm64");
}

crate::it_test!(a_base_without_the_platform_is_a_located_error);
fn a_base_without_the_platform_is_a_located_error() {
    let env = TestEnv::new();
    // A base for amd64 only.
    let base_ctx = context(&env, "FROM scratch\nCOPY a.txt /base.txt\n");
    build(
        &env,
        &[
            "build",
            "--platform",
            "linux/amd64",
            "-o",
            "base.tar",
            base_ctx.to_str().unwrap(),
        ],
    );
    std::fs::rename(env.path().join("base.tar"), env.path().join("ctx/base.tar")).unwrap();
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar\nCOPY a.txt /\n",
    );
    let mut c = env.cmd_in(
        env.path(),
        &["build", "--platform", "linux/amd64,linux/arm64", "ctx"],
    );
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert!(
        err.contains("has no image for linux/arm64 (it has: linux/amd64)"),
        "{err}"
    );
}

crate::it_test!(bad_platforms_are_usage_errors);
fn bad_platforms_are_usage_errors() {
    let env = TestEnv::new();
    let ctx = context(&env, "FROM scratch\nCOPY a.txt /a.txt\n");
    let out = env.run(&["build", "--platform", "linux/", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--platform: platform `linux/`"),
        "{}",
        stderr(&out)
    );
    env.write("ctx/Dockerfile", "FROM --platform=linux/a/b/c scratch\n");
    let out = env.run(&["build", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FROM --platform"), "{}", stderr(&out));
}

crate::it_test!(a_spec_builds_its_platforms_with_variables);
fn a_spec_builds_its_platforms_with_variables() {
    let env = TestEnv::new();
    env.write("ctx/amd64/which", "amd64\n");
    env.write("ctx/arm64/which", "arm64\n");
    env.write(
        "ctx/app.toml",
        r#"[build]
platforms = ["linux/amd64", "linux/arm64"]

[stage.tools]
from = "scratch"
platform = "${BUILDPLATFORM}"
[[stage.tools.step]]
copy = { src = "amd64/which", dest = "/tool" }

[image.app]
from = "scratch"
tags = ["app:1"]
output = "app.oci.tar"
[[image.app.step]]
copy = [
  { src = "${TARGETARCH}/which", dest = "/which" },
  { from = "tools", src = "/tool", dest = "/tool-$${literal}" },
]

[image.armonly]
from = "scratch"
platforms = ["linux/arm64"]
output = "armonly.oci.tar"
[[image.armonly.step]]
copy = { src = "arm64/which", dest = "/w" }
"#,
    );
    let log = build(&env, &["build", "--progress=plain", "ctx/app.toml"]);
    // The build-platform stage is made once for both targets.
    assert_eq!(log.matches("COPY amd64/which /tool\n").count(), 1, "{log}");
    let app = env.path().join("ctx/app.oci.tar");
    let index = raw_index(&app);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    for arch in ["amd64", "arm64"] {
        let cfg = config_for(&app, arch);
        assert_eq!(cfg["architecture"], arch);
        let created_by: Vec<String> = cfg["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            created_by
                .iter()
                .any(|c| c.contains(&format!("COPY {arch}/which /which"))
                    && c.contains("/tool-${literal}")),
            "{created_by:?}"
        );
    }
    // An image with its own platforms: only those, so a plain archive.
    let arm = env.path().join("ctx/armonly.oci.tar");
    assert!(archive_names(&arm).contains(&"manifest.json".to_string()));
    let cfg: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", arm.display()),
        ],
    ))
    .unwrap();
    assert_eq!(cfg["architecture"], "arm64");
    // --platform wins over the spec's.
    let log = build(
        &env,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/arm64",
            "ctx/app.toml",
        ],
    );
    assert!(!log.contains("amd64/which /which"), "{log}");
    assert!(archive_names(&app).contains(&"manifest.json".to_string()));
}

crate::it_test!(steps_before_a_platform_variable_are_built_once);
/// A stage that differs between platforms only after some steps: those
/// steps are made once, and each platform's image is byte for byte the one
/// a build for that platform alone makes.
fn steps_before_a_platform_variable_are_built_once() {
    let env = TestEnv::new();
    let df = "FROM scratch\nCOPY a.txt /a.txt\nARG TARGETARCH\nLABEL arch=$TARGETARCH\nCOPY a.txt /b-$TARGETARCH\n";
    let ctx = context(&env, df);
    let log = build(
        &env,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "both.tar",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(log.matches("COPY a.txt /a.txt\n").count(), 1, "{log}");
    assert!(log.contains("[linux/arm64 0] "), "{log}");
    let both = env.path().join("both.tar");
    for arch in ["amd64", "arm64"] {
        build(
            &env,
            &[
                "build",
                "--platform",
                &format!("linux/{arch}"),
                "-o",
                &format!("{arch}.tar"),
                ctx.to_str().unwrap(),
            ],
        );
        let alone = format!(
            "oci-archive:{}",
            env.path().join(format!("{arch}.tar")).display()
        );
        let alone = tool("skopeo", &["inspect", "--raw", &alone]);
        // The index's entry for the platform is the manifest a build for it
        // alone writes.
        let index = raw_index(&both);
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()
            .clone();
        let alone_digest = format!("sha256:{}", sha256_hex(alone.as_bytes()));
        assert_eq!(entry["digest"], alone_digest, "{arch}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    imgbuild::digest::Digest::of(bytes).hex().to_string()
}

crate::it_test!(indexes_nested_without_end_are_refused);
/// A hostile layout whose index names an index that names an index… (100
/// deep): a clear error, no stack overflow, nothing imported.
fn indexes_nested_without_end_are_refused() {
    let env = TestEnv::new();
    let dir = env.path().join("ctx/layout");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = imgbuild::digest::Digest::of(bytes).hex().to_string();
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut top = put(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
    for _ in 0..100 {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": top.0, "size": top.1,
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        });
        top = put(&serde_json::to_vec(&index).unwrap());
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": top.0, "size": top.1}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    env.write("ctx/Dockerfile", "FROM oci:layout\n");
    let out = env.run(&["build", "--platform", "linux/amd64", "ctx"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("indexes nested more than 8 deep"), "{err}");
    assert!(!err.contains("overflow"), "{err}");
}

/// What `imgbuild ARGS` prints, asserting success.
fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    assert_success(&out, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The single object `imgbuild inspect ARGS` prints.
fn inspect(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(env, &[&["inspect"], args].concat())).unwrap();
    v[0].clone()
}

crate::it_test!(a_multi_platform_tag_is_listed_inspected_and_exported_per_platform);
/// Issue 14 item 5: `images` lists a multi-platform tag once per platform,
/// `inspect`, `history` and `export` take `--platform` (default: the
/// host's), `export` without it writes the index, `tag` and `rmi` carry
/// every platform, and `store check` keeps index tags honest.
fn a_multi_platform_tag_is_listed_inspected_and_exported_per_platform() {
    let env = TestEnv::new();
    let ctx = context(
        &env,
        "FROM scratch\nARG TARGETARCH\nCOPY a.txt /a.txt\nLABEL arch=$TARGETARCH\n",
    );
    let ctx = ctx.to_str().unwrap();
    let both = "linux/amd64,linux/arm64";
    build(
        &env,
        &["build", "-q", "--platform", both, "-t", "mp:1", ctx],
    );
    env.write("other/b.txt", "b\n");
    env.write("other/Dockerfile", "FROM scratch\nCOPY b.txt /b.txt\n");
    let other = env.path().join("other");
    build(
        &env,
        &["build", "-q", "-t", "one:1", other.to_str().unwrap()],
    );
    let host = imgbuild::platform::host();
    // The host's image when the index has it, else the first.
    let default_arch = if host.arch == "arm64" {
        "arm64"
    } else {
        "amd64"
    };

    let table = ok(&env, &["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY   TAG   IMAGE ID"),
        "{table}"
    );
    assert!(lines[0].ends_with("   PLATFORM"), "{table}");
    let mp: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("mp "))
        .copied()
        .collect();
    assert_eq!(mp.len(), 2, "{table}");
    assert!(mp[0].ends_with("   linux/amd64"), "{table}");
    assert!(mp[1].ends_with("   linux/arm64"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("one ") && l.ends_with(&host.to_string())),
        "{table}"
    );
    let json = ok(&env, &["images", "--format", "json"]);
    let platforms: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["Repository"] == "mp")
        .map(|v| v["Platform"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{json}");

    let arm = inspect(&env, &["--platform", "linux/arm64", "mp:1"]);
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Config"]["Labels"]["arch"], "arm64");
    assert_eq!(arm["RepoTags"], serde_json::json!(["mp:1"]));
    assert_eq!(inspect(&env, &["mp:1"])["Architecture"], default_arch);
    let out = env.run(&["inspect", "--platform", "linux/s390x", "mp:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "mp:1 has no image for linux/s390x in the store (it has: linux/amd64, linux/arm64)"
        ),
        "{}",
        stderr(&out)
    );
    for arch in ["amd64", "arm64"] {
        let platform = format!("linux/{arch}");
        let history = ok(&env, &["history", "--platform", &platform, "mp:1"]);
        assert!(history.contains(&format!("LABEL arch={arch}")), "{history}");
    }

    // The index, or one platform as a plain archive named by the tag.
    ok(&env, &["export", "mp:1", "-o", "all.tar"]);
    let all = env.path().join("all.tar");
    let index = raw_index(&all);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    assert!(!archive_names(&all).contains(&"manifest.json".to_string()));
    ok(
        &env,
        &[
            "export",
            "--platform",
            "linux/arm64",
            "mp:1",
            "-o",
            "arm.tar",
        ],
    );
    let arm_tar = env.path().join("arm.tar");
    assert!(archive_names(&arm_tar).contains(&"manifest.json".to_string()));
    let cfg = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", arm_tar.display()),
        ],
    );
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["architecture"], "arm64", "{cfg}");
    let named = tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:docker.io/library/mp:1", arm_tar.display()),
        ],
    );
    assert!(named.contains("\"Architecture\": \"arm64\""), "{named}");
    let out = env.run(&["export", "--format", "docker", "mp:1", "-o", "d.tar"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("add --platform"), "{}", stderr(&out));

    // Pruning keeps every platform of a tag; a new name takes them all.
    ok(&env, &["prune", "--all"]);
    ok(&env, &["tag", "mp:1", "copy:1"]);
    let arm_id = arm["Id"].as_str().unwrap();
    assert_eq!(
        inspect(&env, &["--platform", "linux/arm64", "copy:1"])["Id"],
        arm_id
    );
    // Untagging one name deletes nothing the other still names; the last
    // name takes both platforms' images.
    let untag = ok(&env, &["rmi", "mp:1"]);
    assert_eq!(untag, "Untagged: mp:1\n");
    let untag = ok(&env, &["rmi", "copy:1"]);
    assert!(untag.starts_with("Untagged: copy:1\n"), "{untag}");
    assert_eq!(untag.matches("Deleted: ").count(), 2, "{untag}");
    assert!(untag.contains(&format!("Deleted: {arm_id}")), "{untag}");
    ok(&env, &["store", "check"]);

    // A tag whose index blob is gone is a problem `store check` names and
    // repairs; the other tags list as before.
    build(
        &env,
        &["build", "-q", "--platform", both, "-t", "mp:1", ctx],
    );
    let tag = std::fs::read_to_string(env.store().join("tags/docker.io%2Flibrary%2Fmp:1")).unwrap();
    let index = tag.strip_prefix("index sha256:").unwrap().trim();
    std::fs::remove_file(env.store().join("blobs/sha256").join(index)).unwrap();
    let out = env.run(&["store", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "tag mp:1 points at index sha256:{index}, which is missing or corrupt"
        )),
        "{}",
        stderr(&out)
    );
    let table = ok(&env, &["images"]);
    assert!(table.contains("\none "), "{table}");
    let repaired = ok(&env, &["store", "check", "--repair"]);
    assert!(repaired.contains("removed tag mp:1\n"), "{repaired}");
    ok(&env, &["store", "check"]);
}

crate::it_test!(a_spec_images_docker_format_is_honoured_and_refused_for_several_platforms);
/// The spec's `format = "docker"` was read but never reached the archive.
fn a_spec_images_docker_format_is_honoured_and_refused_for_several_platforms() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "a\n");
    env.write(
        "ctx/s.toml",
        "[image.app]\nfrom = \"scratch\"\nformat = \"docker\"\noutput = \"app.tar\"\n\
         [[image.app.step]]\ncopy = { src = \"a.txt\", dest = \"/a\" }\n",
    );
    build(&env, &["build", "-q", "ctx/s.toml"]);
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!(
                "docker-archive:{}",
                env.path().join("ctx/app.tar").display()
            ),
        ],
    );
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    // --format wins over the spec's.
    build(&env, &["build", "-q", "--format", "oci", "ctx/s.toml"]);
    let names = archive_names(&env.path().join("ctx/app.tar"));
    assert!(names.contains(&"index.json".to_string()));
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", env.path().join("ctx/app.tar").display()),
        ],
    );
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
    // A docker archive holds one platform.
    let out = env.run(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "ctx/s.toml",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds one platform"),
        "{}",
        stderr(&out)
    );
}
