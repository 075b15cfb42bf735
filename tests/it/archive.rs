//! Archives load in the real tools: skopeo inspects them, umoci unpacks exactly
//! the files with the modes and owners the spec asked for, podman loads them.

use std::path::{Path, PathBuf};

use crate::util::{TestEnv, assert_success, tool, tree, unpack};

/// Where `make image` stages the static binary for specs/app.toml.
pub const STAGED_BIN: &str = "dist/bin/imgbuild";

/// A checkout of the project holding what specs/app.toml copies, with the test
/// binary standing in for the static release binary `make image` stages.
pub fn app_checkout(root: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root.join("specs")).unwrap();
    for f in ["README.md", "LICENSE", "specs/app.toml"] {
        std::fs::copy(repo.join(f), root.join(f)).unwrap();
    }
    crate::util::copy_tree(&repo.join("docs"), &root.join("docs"));
    let bin = root.join(STAGED_BIN);
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_imgbuild"), bin).unwrap();
    root.to_path_buf()
}

/// What umoci should find for specs/app.toml built from `checkout`.
fn expected_app_tree(checkout: &Path) -> Vec<String> {
    let mut want = vec![
        "usr 755 0:0 dir".to_string(),
        "usr/local 755 0:0 dir".into(),
        "usr/local/bin 755 0:0 dir".into(),
        format!(
            "usr/local/bin/imgbuild 755 0:0 {} bytes",
            std::fs::metadata(checkout.join(STAGED_BIN)).unwrap().len()
        ),
        "usr/share 755 0:0 dir".into(),
        "usr/share/doc 755 0:0 dir".into(),
        "usr/share/doc/imgbuild 755 0:0 dir".into(),
    ];
    for f in ["LICENSE", "README.md"] {
        let len = std::fs::metadata(checkout.join(f)).unwrap().len();
        want.push(format!("usr/share/doc/imgbuild/{f} 644 0:0 {len} bytes"));
    }
    want.push("usr/share/doc/imgbuild/docs 755 0:0 dir".into());
    for line in tree(&checkout.join("docs")) {
        let (rel, rest) = line.split_once(' ').unwrap();
        let kind = rest.splitn(3, ' ').nth(2).unwrap();
        let mode = if kind == "dir" { "755" } else { "644" };
        want.push(format!(
            "usr/share/doc/imgbuild/docs/{rel} {mode} 0:0 {kind}"
        ));
    }
    want.sort();
    want
}

crate::it_test!(app_spec_archive_inspects_unpacks_and_loads);
fn app_spec_archive_inspects_unpacks_and_loads() {
    let env = TestEnv::new();
    let checkout = app_checkout(&env.path().join("checkout"));
    let out = env.run_in(&checkout, &["specs/app.toml"]);
    assert_success(&out, &["specs/app.toml"]);
    let archive = checkout.join("dist/imgbuild.oci.tar");
    assert!(archive.is_file());

    // skopeo: two layers, the config the spec asked for.
    let inspect = tool(
        "skopeo",
        &["inspect", &crate::util::oci_archive_ref(&archive)],
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Labels"]["org.opencontainers.image.title"], "imgbuild");
    let config = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &crate::util::oci_archive_ref(&archive),
        ],
    );
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/imgbuild"])
    );
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["--help"]));
    assert_eq!(c["config"]["WorkingDir"], "/work");
    let history = c["history"].as_array().unwrap();
    assert!(
        history[0]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("COPY --chmod=a=rX,u+w README.md LICENSE /usr/share/doc/imgbuild/")
    );
    assert!(history.iter().any(|h| h["created_by"]
        == "ENV IMGBUILD_STORE=/var/cache/imgbuild PATH=/usr/local/bin"
        && h["empty_layer"] == true));

    // umoci: exactly the files copied, with the spec's modes and owners.
    let rootfs = unpack(&archive, env.path());
    let mut got = tree(&rootfs);
    got.sort();
    assert_eq!(got, expected_app_tree(&checkout));

    // podman: loads it, under its tag, with our image ID.
    let id = env.ok(&["inspect", "imgbuild:0.1.0"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let id = id[0]["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let proot = env.path().join("podman");
    let p = |args: &[&str]| {
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
    };
    let loaded = p(&["load", "-i", archive.to_str().unwrap()]);
    for tag in ["imgbuild:0.1.0", "imgbuild:latest"] {
        assert!(
            loaded.contains(&format!("Loaded image: localhost/{tag}\n")),
            "{tag}: {loaded}"
        );
        let pid = p(&["image", "inspect", "--format", "{{.Id}}", tag]);
        assert_eq!(pid.trim(), id, "{tag}");
    }
}

crate::it_test!(every_tag_reaches_every_tool);
/// Every tag of an archive reaches every tool: skopeo through both
/// transports, umoci, and our own `load`.
fn every_tag_reaches_every_tool() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "a\n");
    env.write(
        "ctx/spec.toml",
        "[image.app]\nfrom = \"scratch\"\ntags = [\"app:1\", \"app:latest\", \"reg.example.com/team/app:2\"]\n\
         output = \"app.tar\"\n[[image.app.step]]\ncopy = [{ src = \"a.txt\", dest = \"/\" }]\n",
    );
    let ctx = env.path().join("ctx");
    let out = env.run_in(&ctx, &["spec.toml"]);
    assert_success(&out, &["spec.toml"]);
    let archive = ctx.join("app.tar");
    let a = archive.display();
    let layout = env.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    tool(
        "tar",
        &["-xf", &a.to_string(), "-C", layout.to_str().unwrap()],
    );
    let digests: Vec<String> = [
        ("docker.io/library/app:1", "app:1"),
        ("docker.io/library/app:latest", "app:latest"),
        ("reg.example.com/team/app:2", "reg.example.com/team/app:2"),
    ]
    .iter()
    .map(|(full, familiar)| {
        let oci = tool(
            "skopeo",
            &["inspect", "--raw", &format!("oci-archive:{a}:{full}")],
        );
        let docker = tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                &format!("docker-archive:{a}:{familiar}"),
            ],
        );
        let docker: serde_json::Value = serde_json::from_str(&docker).unwrap();
        assert_eq!(docker["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        let bundle = env
            .path()
            .join(format!("bundle-{}", familiar.replace(['/', ':'], "-")));
        tool(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:{full}", layout.display()),
                bundle.to_str().unwrap(),
            ],
        );
        assert_eq!(std::fs::read(bundle.join("rootfs/a.txt")).unwrap(), b"a\n");
        let m: serde_json::Value = serde_json::from_str(&oci).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    })
    .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");

    // Our own load: one image, every name.
    let other = TestEnv::new();
    let loaded = other.ok(&["load", &a.to_string()]);
    assert_eq!(
        loaded,
        "Loaded image: app:1\nLoaded image: app:latest\nLoaded image: reg.example.com/team/app:2\n"
    );
}

crate::it_test!(owners_modes_stages_and_bases);
fn owners_modes_stages_and_bases() {
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write("ctx/bin/tool", "#!/bin/sh\necho tool\n");
    env.write("ctx/etc/app.conf", "x=1\n");
    env.write(
        "ctx/etc/passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    );
    env.write("ctx/etc/group", "root:x:0:\nstaff:x:50:\n");
    std::os::unix::fs::symlink("tool", ctx.join("bin/tool-link")).unwrap();
    env.write(
        "ctx/base.toml",
        r#"
[build]
source_date_epoch = 0
[image.base]
from = "scratch"
tags = ["base:1"]
output = "base.tar"
[[image.base.step]]
copy = [{ src = ["etc/passwd", "etc/group"], dest = "/etc/", mode = "0644" }]
"#,
    );
    env.ok(&["build", ctx.join("base.toml").to_str().unwrap()]);
    env.write(
        "ctx/app.toml",
        r#"
[build]
source_date_epoch = 0

[stage.builder]
from = "oci-archive:base.tar"
[[stage.builder.step]]
copy = [{ src = "bin", dest = "/opt/bin", mode = "0755" }]

[image.app]
from = "base:1"
output = "app.tar"
user = "app"
[[image.app.step]]
copy = [
  { from = "builder", src = "/opt/bin/tool", dest = "/usr/bin/tool" },
  { src = "etc/app.conf", dest = "/etc/app/", owner = "app:staff", mode = "0600" },
]
"#,
    );
    let out = env.run_in(&ctx, &["app.toml"]);
    assert_success(&out, &["app.toml"]);
    let rootfs = unpack(&ctx.join("app.tar"), env.path());
    let mut got = tree(&rootfs);
    got.sort();
    let want = [
        "etc 755 0:0 dir",
        "etc/app 755 1000:50 dir",
        "etc/app/app.conf 600 1000:50 4 bytes",
        "etc/group 644 0:0 22 bytes",
        "etc/passwd 644 0:0 61 bytes",
        "usr 755 0:0 dir",
        "usr/bin 755 0:0 dir",
        "usr/bin/tool 755 0:0 20 bytes",
    ];
    assert_eq!(got, want);
}

crate::it_test!(docker_format_keeps_the_image_id);
fn docker_format_keeps_the_image_id() {
    let env = TestEnv::new();
    env.write("ctx/foo.txt", "Hello World\n");
    env.write(
        "ctx/spec.toml",
        "[build]\nsource_date_epoch = 0\n[image.demo]\nfrom = \"scratch\"\ntags = [\"demo:1\"]\n[[image.demo.step]]\ncopy = [{ src = \"foo.txt\", dest = \"/foo.txt\" }]\n",
    );
    let ctx = env.path().join("ctx");
    env.ok(&[
        "build",
        "-o",
        "oci.tar",
        ctx.join("spec.toml").to_str().unwrap(),
    ]);
    env.ok(&[
        "build",
        "--format",
        "docker",
        "-o",
        "docker.tar",
        ctx.join("spec.toml").to_str().unwrap(),
    ]);
    let id = |t: &str| {
        let raw = tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &crate::util::oci_archive_ref(&env.path().join(t)),
            ],
        );
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        (
            m["config"]["digest"].as_str().unwrap().to_string(),
            m["mediaType"].as_str().unwrap().to_string(),
        )
    };
    let (oci_id, oci_mt) = id("oci.tar");
    let (docker_id, docker_mt) = id("docker.tar");
    assert_eq!(oci_id, docker_id);
    assert_eq!(oci_mt, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        docker_mt,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // Both flavours are docker archives too.
    for t in ["oci.tar", "docker.tar"] {
        let v = tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                &format!("docker-archive:{}", env.path().join(t).display()),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    }
}

/// A private dockerd (Docker 20.10, Debian's docker.io) on a socket of the
/// test's own, with its own data root; stopped when dropped.
struct Dockerd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let child = std::process::Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--containerd-namespace", "imgbuild-it"])
            .args(["--containerd-plugins-namespace", "imgbuild-it-plugins"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("dockerd (docker.io: see the README's packages)");
        let d = Dockerd {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !d.docker_ok(&["version"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not start:\n{}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        d
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        self.docker_cmd(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn docker_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.dir.join("sock").display()))
            .args(args);
        c
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_cmd(args).output().expect("docker");
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SIGTERM: dockerd stops its containerd and unmounts.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.wait();
    }
}

crate::it_test!(every_tag_reaches_docker_load);
fn every_tag_reaches_docker_load() {
    let env = TestEnv::new();
    let checkout = app_checkout(&env.path().join("checkout"));
    let out = env.run_in(&checkout, &["specs/app.toml"]);
    assert_success(&out, &["specs/app.toml"]);
    let archive = checkout.join("dist/imgbuild.oci.tar");
    let id = env.ok(&["inspect", "-f", "{{.Id}}", "imgbuild:0.1.0"]);
    let d = Dockerd::start(&env.path().join("docker"));
    let loaded = d.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        loaded,
        "Loaded image: imgbuild:0.1.0\nLoaded image: imgbuild:latest\n"
    );
    for tag in ["imgbuild:0.1.0", "imgbuild:latest"] {
        let got = d.docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
        assert_eq!(got.trim(), id.trim(), "{tag}");
    }
    // (Running it needs the static binary `make image` puts in; the test
    // binary stands in here: scripts/check-image.sh runs the real one.)
}
