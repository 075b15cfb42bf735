//! Hostile layers (tests/fixtures/hostile) never write outside the root they
//! are extracted into, whichever way imgbuild extracts them.

use std::path::{Path, PathBuf};

use crate::util::{TestEnv, assert_success, oci_archive, stderr};

const TARGET: &str = "/tmp/imgbuild-hostile";

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

crate::it_test!(hostile_layers_stay_inside_the_root);
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
