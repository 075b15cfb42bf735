//! Layers are what their digests claim: diff_id liars are refused, `store check` finds and repairs corruption.
//!
//! A "liar" is an image whose config claims, for a layer of its own, the
//! diff_id of another image's layer (issue 10: it replaced that layer for
//! every image sharing the diff_id). Each liar comes in both orders — liar
//! first, then the honest image; honest first, then the liar — through an
//! OCI archive, a docker archive and a real registry, and must be refused
//! with the layer, the claimed and the actual digest named, storing nothing.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, assert_success, stderr};

fn sha(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A layer tar of `(path, mode, content)` files and `(path, target)` symlinks.
fn layer(files: &[(&str, u32, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    for (path, target) in links {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_link(&mut h, path, target).unwrap();
    }
    b.into_inner().unwrap()
}

/// busybox with `sh` and `cat`: the layer every test image starts from.
fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install busybox-static (see .ci/run)");
    layer(
        &[("bin/busybox", 0o755, &busybox)],
        &[("bin/sh", "busybox"), ("bin/cat", "busybox")],
    )
}

fn motd_layer(text: &str) -> Vec<u8> {
    layer(&[("etc/motd", 0o644, text.as_bytes())], &[])
}

/// An image: its layers (uncompressed tars, stored gzipped) and the
/// diff_ids its config claims for them.
struct Image {
    name: String,
    tars: Vec<Vec<u8>>,
    diff_ids: Vec<String>,
}

impl Image {
    /// An image whose config tells the truth about its layers.
    fn honest(name: &str, tars: Vec<Vec<u8>>) -> Image {
        let diff_ids = tars.iter().map(|t| sha(t)).collect();
        Image {
            name: name.into(),
            tars,
            diff_ids,
        }
    }

    /// An image whose config claims `claims` for its layers.
    fn lying(name: &str, tars: Vec<Vec<u8>>, claims: Vec<String>) -> Image {
        Image {
            name: name.into(),
            tars,
            diff_ids: claims,
        }
    }

    fn blobs(&self) -> Vec<Vec<u8>> {
        self.tars.iter().map(|t| gzip(t)).collect()
    }

    fn config(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
        }))
        .unwrap()
    }

    fn manifest(&self) -> Vec<u8> {
        let config = self.config();
        let layers: Vec<_> = self
            .blobs()
            .iter()
            .map(|b| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(b), "size": b.len(),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(&config), "size": config.len()},
            "layers": layers,
        }))
        .unwrap()
    }

    /// Writes an OCI archive (blobs first, index.json last, as many tools do).
    fn oci_archive(&self, out: &Path) {
        let manifest = self.manifest();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": sha(&manifest), "size": manifest.len(),
                           "annotations": {"org.opencontainers.image.ref.name": self.name}}],
        });
        let mut files: Vec<(String, Vec<u8>)> = vec![(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )];
        for b in self
            .blobs()
            .into_iter()
            .chain([self.config(), manifest.clone()])
        {
            files.push((format!("blobs/sha256/{}", &sha(&b)[7..]), b));
        }
        files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
        write_tar(out, &files);
    }

    /// Writes a `docker save` archive: `<n>/layer.tar` (uncompressed, as
    /// docker writes them), the config, manifest.json.
    fn docker_archive(&self, out: &Path) {
        let config = self.config();
        let config_name = format!("{}.json", &sha(&config)[7..]);
        let mut files = Vec::new();
        let mut layer_names = Vec::new();
        for (i, t) in self.tars.iter().enumerate() {
            let n = format!("{i:02}{}/layer.tar", &sha(t)[7..19]);
            files.push((n.clone(), t.clone()));
            layer_names.push(n);
        }
        files.push((config_name.clone(), config));
        let manifest = serde_json::json!([{
            "Config": config_name, "RepoTags": [self.name], "Layers": layer_names,
        }]);
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ));
        write_tar(out, &files);
    }
}

fn write_tar(out: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

/// The honest image and its liar: same base layer, and a second layer whose
/// diff_id the liar claims for different bytes of its own.
fn pair() -> (Image, Image) {
    let base = busybox_layer();
    let honest_top = motd_layer("honest\n");
    let evil_top = motd_layer("evil\n");
    let honest = Image::honest("honest:latest", vec![base.clone(), honest_top.clone()]);
    let liar = Image::lying(
        "liar:latest",
        vec![base.clone(), evil_top],
        vec![sha(&base), sha(&honest_top)],
    );
    (honest, liar)
}

/// Every file name in a store directory (recursively), for "nothing stored".
fn names_in(store: &Path, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let root = store.join(dir);
    fn walk(d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    walk(&root, &mut out);
    out.sort();
    out
}

/// What the store holds of images: blobs, image records, tags, snapshots.
fn contents(store: &Path) -> Vec<Vec<String>> {
    ["blobs/sha256", "images", "tags", "snapshots", "layers"]
        .iter()
        .map(|d| names_in(store, d))
        .collect()
}

/// The refusal names the layer (`blob`: as the archive or registry holds
/// it), the claimed and the actual digest; it exits `code`.
fn assert_refused(out: &std::process::Output, liar: &Image, blob: &str, code: i32, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: the liar must be refused\nstderr:\n{err}"
    );
    let claimed = &liar.diff_ids[1];
    let actual = sha(&liar.tars[1]);
    for needle in [blob, claimed, &actual] {
        assert!(
            err.contains(needle),
            "{what}: `{needle}` not named in:\n{err}"
        );
    }
    assert!(err.contains("diff_id"), "{what}: {err}");
}

/// `run IMAGE cat /etc/motd`: what the image really shows (through the
/// per-layer overlay lowers in `layers/`).
fn motd(env: &TestEnv, image: &str) -> String {
    env.ok(&["run", image, "cat", "/etc/motd"])
}

/// `COPY --from=IMAGE /etc/motd` into a new image: through `snapshots/`.
fn motd_via_snapshot(env: &TestEnv, image: &str, tag: &str) -> String {
    let ctx = env.path().join(format!("ctx-{tag}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {image}\nCOPY --from={image} /etc/motd /copied\n"),
    )
    .unwrap();
    env.ok(&["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
    env.ok(&["run", tag, "cat", "/copied"])
}

/// `docker`: the archive holds the layers uncompressed, as `docker save`
/// writes them (the blob is the tar itself).
fn both_orders(load: impl Fn(&TestEnv, &Image) -> std::process::Output, docker: bool, how: &str) {
    let (honest, liar) = pair();
    let blob = if docker {
        sha(&liar.tars[1])
    } else {
        sha(&liar.blobs()[1])
    };
    // Liar first: refused, nothing stored; the honest image then loads and
    // shows its own content.
    let env = TestEnv::new();
    let before = contents(&env.store());
    let out = load(&env, &liar);
    assert_refused(&out, &liar, &blob, 1, &format!("{how}, liar first"));
    assert_eq!(
        contents(&env.store()),
        before,
        "{how}: a refused image left something in the store"
    );
    assert_success(&load(&env, &honest), &[how, "honest after liar"]);
    assert_eq!(motd(&env, "honest:latest"), "honest\n");
    assert_eq!(
        motd_via_snapshot(&env, "honest:latest", "h2:latest"),
        "honest\n"
    );
    env.ok(&["store", "check"]);

    // Honest first (its layers extracted, in layers/ and snapshots/), then
    // the liar: refused, nothing of it stored, the honest image unchanged.
    let env = TestEnv::new();
    assert_success(&load(&env, &honest), &[how, "honest first"]);
    assert_eq!(motd(&env, "honest:latest"), "honest\n");
    assert_eq!(
        motd_via_snapshot(&env, "honest:latest", "h2:latest"),
        "honest\n"
    );
    let before = contents(&env.store());
    let out = load(&env, &liar);
    assert_refused(&out, &liar, &blob, 1, &format!("{how}, honest first"));
    assert_eq!(
        contents(&env.store()),
        before,
        "{how}: a refused image left something in the store"
    );
    let tags = env.ok(&["images"]);
    assert!(!tags.contains("liar"), "{tags}");
    assert_eq!(motd(&env, "honest:latest"), "honest\n");
    env.ok(&["store", "check"]);
}

crate::it_test!(issue_10_diff_id_liars_in_oci_archives_are_refused_in_both_orders);
fn issue_10_diff_id_liars_in_oci_archives_are_refused_in_both_orders() {
    both_orders(
        |env, img| {
            let p = env
                .path()
                .join(format!("{}.oci.tar", &img.name[..img.name.len() - 7]));
            img.oci_archive(&p);
            env.run(&["load", p.to_str().unwrap()])
        },
        false,
        "load oci-archive",
    );
}

crate::it_test!(issue_10_diff_id_liars_in_docker_archives_are_refused_in_both_orders);
fn issue_10_diff_id_liars_in_docker_archives_are_refused_in_both_orders() {
    both_orders(
        |env, img| {
            let p = env
                .path()
                .join(format!("{}.docker.tar", &img.name[..img.name.len() - 7]));
            img.docker_archive(&p);
            env.run(&["load", p.to_str().unwrap()])
        },
        true,
        "load docker-archive",
    );
}

crate::it_test!(issue_10_diff_id_liars_as_build_bases_are_refused);
fn issue_10_diff_id_liars_as_build_bases_are_refused() {
    // The same through a Dockerfile's FROM: the base is imported by the
    // build, and refused there.
    let (honest, liar) = pair();
    let env = TestEnv::new();
    let h = env.path().join("honest.tar");
    let l = env.path().join("liar.tar");
    honest.oci_archive(&h);
    liar.docker_archive(&l);
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM oci-archive:{}\nRUN cat /etc/motd > /seen\n",
            h.display()
        ),
    );
    env.ok(&[
        "build",
        "-q",
        "-t",
        "h:1",
        env.path().join("ctx").to_str().unwrap(),
    ]);
    env.write(
        "liar-ctx/Dockerfile",
        format!(
            "FROM docker-archive:{}\nRUN cat /etc/motd > /seen\n",
            l.display()
        ),
    );
    let out = env.run(&[
        "build",
        "-q",
        "-t",
        "l:1",
        env.path().join("liar-ctx").to_str().unwrap(),
    ]);
    // A base that cannot be resolved is a problem of the definition,
    // reported before any work starts (exit 2), like a missing one.
    assert_refused(&out, &liar, &sha(&liar.tars[1]), 2, "FROM docker-archive");
    assert_eq!(env.ok(&["run", "h:1", "cat", "/seen"]), "honest\n");
    env.ok(&["store", "check"]);
}

// ---- a real registry -------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CNCF distribution server on 127.0.0.1, stopped when dropped.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(env: &TestEnv) -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is missing: install it (see .ci/run)"
        );
        let port = free_port();
        let dir = env.path().join(format!("registry-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("err.log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Uploads a blob (monolithic POST then PUT), as any client may.
    fn put_blob(&self, repo: &str, data: &[u8]) {
        let agent = ureq::Agent::new_with_defaults();
        let resp = agent
            .post(&self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send_empty()
            .unwrap();
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        agent
            .put(&format!("{location}{sep}digest={}", sha(data)))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .unwrap();
    }

    /// Pushes an image by hand: the registry stores whatever it is given.
    fn push(&self, repo: &str, tag: &str, img: &Image) {
        for b in img.blobs().into_iter().chain([img.config()]) {
            self.put_blob(repo, &b);
        }
        ureq::Agent::new_with_defaults()
            .put(&self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(&img.manifest()[..])
            .unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

crate::it_test!(issue_10_diff_id_liars_from_a_registry_are_refused_in_both_orders);
fn issue_10_diff_id_liars_from_a_registry_are_refused_in_both_orders() {
    let env = TestEnv::new();
    let reg = Registry::start(&env);
    let (honest, liar) = pair();
    reg.push("test/honest", "latest", &honest);
    reg.push("test/liar", "latest", &liar);
    let honest_ref = format!("127.0.0.1:{}/test/honest:latest", reg.port);
    let liar_ref = format!("127.0.0.1:{}/test/liar:latest", reg.port);
    both_orders(
        |env, img| {
            let r = if img.name.starts_with("honest") {
                &honest_ref
            } else {
                &liar_ref
            };
            let out = env.run(&["pull", "-q", r]);
            if out.status.success() {
                env.ok(&["tag", r, &img.name]);
            }
            out
        },
        false,
        "pull",
    );
}

// ---- store check -----------------------------------------------------------------

fn check(env: &TestEnv) -> std::process::Output {
    env.run(&["store", "check"])
}

fn assert_problem(env: &TestEnv, needle: &str) {
    let out = check(env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "store check must find: {needle}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(needle),
        "{needle} not in:\n{}",
        stderr(&out)
    );
}

fn repair(env: &TestEnv) -> String {
    let text = env.ok(&["store", "check", "--repair"]);
    assert_success(&check(env), &["store check after --repair"]);
    text
}

fn first_dir(p: &Path) -> PathBuf {
    std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("nothing in {}", p.display()))
}

crate::it_test!(issue_10_store_check_finds_and_repairs_corrupt_blobs_snapshots_and_liars);
fn issue_10_store_check_finds_and_repairs_corrupt_blobs_snapshots_and_liars() {
    let env = TestEnv::new();
    let (honest, liar) = pair();
    let h = env.path().join("honest.tar");
    honest.oci_archive(&h);
    env.ok(&["load", h.to_str().unwrap()]);
    assert_eq!(motd(&env, "honest:latest"), "honest\n");
    assert_eq!(
        motd_via_snapshot(&env, "honest:latest", "h2:latest"),
        "honest\n"
    );
    assert_success(&check(&env), &["store check of a sound store"]);

    // A file of a snapshot changed on disk.
    let snap = first_dir(&env.store().join("snapshots"));
    std::fs::write(snap.join("etc/motd"), "tampered\n").unwrap();
    assert_problem(&env, "etc/motd");
    let text = repair(&env);
    assert!(text.contains(&snap.display().to_string()), "{text}");
    // Extracted again, from the layers, when next needed.
    assert_eq!(
        motd_via_snapshot(&env, "honest:latest", "h3:latest"),
        "honest\n"
    );

    // A file of a per-layer overlay lower changed on disk.
    let lower = env.store().join("layers/trusted");
    let tampered = std::fs::read_dir(&lower)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("etc/motd").exists())
        .unwrap();
    std::fs::write(tampered.join("etc/motd"), "tampered\n").unwrap();
    assert_problem(&env, "differs from its layers");
    repair(&env);
    assert_eq!(motd(&env, "honest:latest"), "honest\n");

    // A corrupt blob: the blob and every image needing it go, with their tags.
    let top = sha(&honest.blobs()[1]);
    let blob = env.store().join("blobs/sha256").join(&top[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    assert_problem(&env, &format!("blob {top} is corrupt"));
    let text = repair(&env);
    assert!(
        text.contains(&format!("removed corrupt blob {top}")),
        "{text}"
    );
    assert!(text.contains("removed tag honest:latest"), "{text}");

    // A liar that got into the store without passing through imgbuild's
    // checks (an older imgbuild loaded it): written as that version would.
    let env = TestEnv::new();
    env.ok(&["images"]);
    let store = env.store();
    let manifest = liar.manifest();
    let config = liar.config();
    for b in liar
        .blobs()
        .into_iter()
        .chain([config.clone(), manifest.clone()])
    {
        std::fs::write(store.join("blobs/sha256").join(&sha(&b)[7..]), &b).unwrap();
    }
    let id = &sha(&config)[7..];
    std::fs::write(
        store.join("images").join(id),
        format!(r#"{{"manifest":"{}"}}"#, sha(&manifest)),
    )
    .unwrap();
    std::fs::write(
        store.join("tags/docker.io%2Flibrary%2Fliar:latest"),
        format!("sha256:{id}"),
    )
    .unwrap();
    // And an extracted directory without a record (an older imgbuild's).
    std::fs::create_dir_all(store.join("layers/trusted/0123456789abcdef0123456789abcdef/etc"))
        .unwrap();
    let out = check(&env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("decompresses to"), "{err}");
    assert!(err.contains(&liar.diff_ids[1]), "{err}");
    assert!(err.contains("not verified"), "{err}");
    let text = repair(&env);
    assert!(
        text.contains(&format!("removed image {}", &id[..12])),
        "{text}"
    );
    assert!(text.contains("removed tag liar:latest"), "{text}");
    assert!(text.contains("0123456789abcdef0123456789abcdef"), "{text}");
    assert!(!env.ok(&["images"]).contains("liar"));
}
