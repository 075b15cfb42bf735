//! Test environment: a temporary store, context and working directory, and a
//! runner for the real binary (like ripgrep's `Dir`/`TestCommand`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch area for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("imgbuild-it-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// Writes a file (creating parents) under the env.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `imgbuild ARGS` with this env's store, run in `cwd`.
    pub fn cmd_in(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
        c.current_dir(cwd)
            .args(args)
            .env("IMGBUILD_STORE", self.store())
            // Hermetic: no test reaches for docker.io; registry tests opt in.
            .env("IMGBUILD_PULL", "never")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("XDG_CACHE_HOME");
        c
    }

    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.cmd_in(cwd, args).output().expect("run imgbuild")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(self.path(), args)
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "`imgbuild {}` failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        what.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Takes the machine's proxy variables away from `c`: a test's servers are
/// on 127.0.0.1, reached directly.
pub fn without_proxies(c: &mut Command) {
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
}

/// Runs an external tool, failing the test with its output if it fails. The
/// tools are installed by .ci/run; a missing tool is a failure, not a skip.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install it: see .ci/run): {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed:\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman settings that work on CI machines without systemd (cgroupfs, file
/// events, runc), kept under tests/fixtures.
pub fn containers_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containers.conf")
}

/// Unpacks an OCI archive with skopeo + umoci and returns the rootfs path.
/// `oci-archive:PATH`, with the first image name when the index lists
/// several descriptors (one per tag): skopeo then needs a name to pick one.
pub fn oci_archive_ref(archive: &Path) -> String {
    use std::io::Read;
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().as_os_str() != "index.json" {
            continue;
        }
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        let index: serde_json::Value = serde_json::from_slice(&v).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        let name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"].as_str();
        return match name {
            Some(n) if manifests.len() > 1 => format!("oci-archive:{}:{n}", archive.display()),
            _ => format!("oci-archive:{}", archive.display()),
        };
    }
    panic!("{} has no index.json", archive.display())
}

pub fn unpack(archive: &Path, work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &oci_archive_ref(archive),
            &format!("oci:{}:img", layout.display()),
        ],
    );
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:img", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

/// `path mode uid:gid [size|->target]` for every entry under `root`, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let kind = if m.is_dir() {
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("{} bytes", m.len())
            };
            out.push(format!(
                "{rel} {:o} {}:{} {kind}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Copies a directory tree (files, dirs, symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The golden-file check: compares, or rewrites with IMGBUILD_BLESS=1.
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("IMGBUILD_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden {} (run with IMGBUILD_BLESS=1)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "golden mismatch for {}", path.display());
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The uncompressed layer tars of the (single) image in an OCI archive, in order.
pub fn archive_layers(path: &Path) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        files.insert(name, v);
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let blob = |d: &str| &files[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))];
    let m: serde_json::Value =
        serde_json::from_slice(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let raw = blob(l["digest"].as_str().unwrap());
            if !raw.starts_with(&[0x1f, 0x8b]) {
                // An uncompressed layer (a base image's, kept as it came).
                return raw.clone();
            }
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        })
        .collect()
}

/// `path mode uid:gid mtime size` of every entry of a layer tar, in archive order.
pub fn layer_listing(layer: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(layer);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            format!(
                "{} {:o} {}:{} {} {}",
                e.path().unwrap().display(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap()
            )
        })
        .collect()
}

/// Builds `base:latest` into the env's store: busybox-static with its applet
/// links, /etc/passwd and /etc/group (root and `app`, uid 1000), /etc/motd,
/// /tmp and an /opt/d directory — the base image of the sandbox tests.
pub fn busybox_base(env: &TestEnv) -> &'static str {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: install busybox-static (see .ci/run)"
    );
    let root = env.path().join("base/rootfs");
    for d in ["bin", "etc", "tmp", "opt/d", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh",
        "cat",
        "date",
        "echo",
        "ls",
        "rm",
        "mkdir",
        "touch",
        "id",
        "hostname",
        "sleep",
        "mv",
        "cp",
        "seq",
        "sha256sum",
        "true",
        "false",
        "wc",
        "head",
        "tail",
        "find",
        "env",
        "ps",
        "grep",
        "chmod",
        "chown",
        "stat",
        "pwd",
        "ln",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::write(root.join("etc/motd"), "welcome\n").unwrap();
    std::fs::write(root.join("opt/d/f"), "old\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    env.write(
        "base/Dockerfile",
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n",
    );
    let mut c = env.cmd_in(
        &env.path().join("base"),
        &["build", "-q", "-t", "base:latest", "-o", "base.tar", "."],
    );
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &["build base"]);
    "base:latest"
}

/// Every layer of an archive as (path, listing of `tar -tv` style lines).
pub fn layer_listings(archive: &Path) -> Vec<Vec<String>> {
    archive_layers(archive)
        .iter()
        .map(|l| layer_listing(l))
        .collect()
}

/// The mounts of this machine that mention `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    text.lines()
        .filter(|l| l.contains(p.as_ref()))
        .map(str::to_string)
        .collect()
}

/// An OCI archive of one image whose only layer is `layer` (uncompressed).
pub fn oci_archive(layer: &[u8], out: &Path) {
    oci_archive_of(&[layer], out)
}

/// An OCI archive of one image, `hostile:latest`, made of `layers`
/// (uncompressed, bottom first).
pub fn oci_archive_of(layers: &[&[u8]], out: &Path) {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/x"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": format!("sha256:{}", sha256_hex(l)), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha256_hex(&manifest)), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "hostile:latest"}}],
    });
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &serde_json::to_vec(&index).unwrap());
    let mut seen = std::collections::HashSet::new();
    for blob in layers.iter().copied().chain([&config[..], &manifest[..]]) {
        let name = format!("blobs/sha256/{}", sha256_hex(blob));
        if seen.insert(name.clone()) {
            add(&name, blob);
        }
    }
    b.finish().unwrap();
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// The layer digests (`sha256:…`) of the (single) image in an OCI archive.
pub fn manifest_layers(path: &Path) -> Vec<String> {
    use std::io::Read;
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name.ends_with(".json") || e.header().size().unwrap() < 64 << 10 {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(name, v);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))],
    )
    .unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Every folder directly under `dir`, sorted by name.
pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// Whether goldens are being rewritten (`IMGBUILD_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os("IMGBUILD_BLESS").is_some()
}

/// Runs `check` on every case folder under `dir` (sorted), each to the end
/// whatever the others do, then fails once, naming every failing case and
/// why. A folder that lacks one of `inputs`, or one of `goldens` (unless
/// blessing, which writes them), is a failure itself: a new folder can never
/// pass by being skipped. No folder at all is a failure too.
pub fn every_case(dir: &Path, inputs: &[&str], goldens: &[&str], check: impl Fn(&str, &Path)) {
    let cases = case_dirs(dir);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let missing: Vec<&str> = inputs
            .iter()
            .chain(if blessing() { &[][..] } else { goldens })
            .copied()
            .filter(|f| !case.join(f).exists())
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{name}: no {} (every folder is a case; run with IMGBUILD_BLESS=1 to write goldens)",
                missing.join(", ")
            ));
            continue;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&name, case)));
        if let Err(payload) = result {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            failures.push(format!("{name}: {msg}"));
        }
    }
    assert!(!cases.is_empty(), "no case folder under {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {} cases under {} failed:\n\n{}",
        failures.len(),
        cases.len(),
        dir.display(),
        failures.join("\n\n")
    );
}

/// Every line of `needles` (when the file exists) is in `text`.
pub fn contains_every_line(needles: &Path, text: &str) {
    let Ok(list) = std::fs::read_to_string(needles) else {
        return;
    };
    let lines: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "{} is empty", needles.display());
    for needle in lines {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}
