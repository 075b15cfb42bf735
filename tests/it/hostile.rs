//! Hostile layers (tests/fixtures/hostile) never write outside the root they
//! are extracted into, whichever way imgbuild extracts them.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::util::{TestEnv, assert_success, stderr};

const TARGET: &str = "/tmp/imgbuild-hostile";

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// An OCI archive of one image whose only layer is `layer` (uncompressed).
fn oci_archive(layer: &[u8], out: &Path) {
    let layer_digest = sha(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/x"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
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
    for blob in [layer, &config[..], &manifest[..]] {
        add(&format!("blobs/sha256/{}", sha(blob)), blob);
    }
    b.finish().unwrap();
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_layers_stay_inside_the_root() {
    let _ = std::fs::remove_dir_all(TARGET);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let cases = fixtures();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let env = TestEnv::new();
        let name = case.file_stem().unwrap().to_string_lossy().into_owned();
        let archive = env.path().join("hostile.tar");
        oci_archive(&std::fs::read(&case).unwrap(), &archive);

        // Per-layer overlay snapshot (what RUN and `imgbuild run` use).
        env.ok(&["load", archive.to_str().unwrap()]);
        let out = env.run(&["run", "hostile:latest"]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{name}: there is nothing to run"
        );
        // Merged snapshot (what COPY --from uses).
        env.write(
            "ctx/Dockerfile",
            format!(
                "FROM scratch\nCOPY --from=oci-archive:{} / /copied/\n",
                archive.display()
            ),
        );
        let out = env.run_in(&env.path().join("ctx"), &["build", "-q", "."]);
        let _ = stderr(&out);

        assert!(
            !Path::new(TARGET).exists(),
            "{name} wrote outside the root: {:?}",
            std::fs::read_dir(TARGET).map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        );
        assert_eq!(
            std::fs::read("/etc/passwd").unwrap(),
            passwd,
            "{name} changed /etc/passwd"
        );
        assert_success(&env.run(&["store", "check"]), &["store check", &name]);
    }
}
