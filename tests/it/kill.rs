//! A build killed at any point leaves no partial archive at the output path and
//! no corrupt blob in the store, and the next build succeeds.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use imgbuild::digest::Digest;

use crate::util::{TestEnv, assert_success};

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

fn digest_of_file(p: &Path) -> Digest {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = imgbuild::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finish()
}

/// Every blob hashes to its name; every image record points at a present manifest.
fn assert_store_intact(store: &Path) {
    let blobs = store.join("blobs/sha256");
    if !blobs.exists() {
        return;
    }
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(digest_of_file(&e.path()).hex(), name, "corrupt blob {name}");
    }
    // A build killed before it recorded any image has no images/ yet.
    let Ok(images) = std::fs::read_dir(store.join("images")) else {
        return;
    };
    for e in images {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        let m: Digest = rec["manifest"].as_str().unwrap().parse().unwrap();
        assert!(
            blobs.join(m.hex()).is_file(),
            "image record points at a missing manifest"
        );
    }
}

/// The archive is complete: index.json names a manifest whose blobs are all
/// present with the right digests.
fn assert_archive_complete(path: &Path) {
    let mut blobs = std::collections::HashMap::new();
    let mut index = None;
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                assert_eq!(Digest::of(&bytes).hex(), hex, "corrupt blob in archive");
                blobs.insert(hex.to_string(), bytes);
            }
        } else if name == "index.json" {
            index = Some(bytes);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index.expect("index.json")).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&blobs[m.trim_start_matches("sha256:")]).unwrap();
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(blobs.contains_key(hex), "archive lacks blob {hex}");
    }
}

crate::it_test!(killed_builds_leave_nothing_half_written);
fn killed_builds_leave_nothing_half_written() {
    let env = TestEnv::new();
    for i in 0..4u64 {
        env.write(&format!("ctx/data/part{i}.bin"), noise(12 << 20, i + 1));
    }
    env.write(
        "ctx/spec.toml",
        "[build]\nsource_date_epoch = 0\n[image.big]\nfrom = \"scratch\"\noutput = \"out/big.oci.tar\"\n\
         [[image.big.step]]\ncopy = [{ src = \"data/part0.bin\", dest = \"/a/\" }]\n\
         [[image.big.step]]\ncopy = [{ src = \"data\", dest = \"/data/\" }]\n",
    );
    let ctx = env.path().join("ctx");
    let archive = ctx.join("out/big.oci.tar");
    for (round, delay_ms) in [5u64, 30, 80, 150, 300, 500, 800, 1200]
        .into_iter()
        .enumerate()
    {
        // Each round starts cold, so the kill lands in a different phase.
        let _ = std::fs::remove_dir_all(env.store());
        let _ = std::fs::remove_file(&archive);
        let mut child = env
            .cmd_in(&ctx, &["build", "--progress=quiet", "spec.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if archive.exists() {
            assert_archive_complete(&archive);
        }
        assert_store_intact(&env.store());
        let stray: Vec<_> = std::fs::read_dir(ctx.join("out"))
            .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            stray
                .iter()
                .all(|n| n == "big.oci.tar" || n.to_string_lossy().starts_with('.')),
            "round {round}: unexpected files {stray:?} (status {status:?})"
        );
    }
    // After all that, a build completes and its archive is whole.
    let out = env.run_in(&ctx, &["build", "spec.toml"]);
    assert_success(&out, &["build after kills"]);
    assert_archive_complete(&archive);
    assert_store_intact(&env.store());
}
