//! The example Makefile of docs/makefile.md: make -j3 builds three images that
//! share a layer, a second make does nothing, and changing one context file
//! rebuilds exactly the images that use it.

use std::process::Command;

use crate::util::{TestEnv, copy_tree};

fn make(env: &TestEnv, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("make")
        .current_dir(dir)
        .args(args)
        .env("IMGBUILD", env!("CARGO_BIN_EXE_imgbuild"))
        .env("IMGBUILD_STORE", env.store())
        .output()
        .unwrap_or_else(|e| panic!("cannot run make (install it: see .ci/run): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn built(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" build "))
        .filter_map(|l| l.split(" -f ").nth(1))
        .map(|l| l.split('.').next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

crate::it_test!(make_rebuilds_exactly_what_changed);
fn make_rebuilds_exactly_what_changed() {
    let env = TestEnv::new();
    let dir = env.path().join("example");
    copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/make"),
        &dir,
    );

    let (ok, log) = make(&env, &dir, &["-j3"]);
    assert!(ok, "{log}");
    assert_eq!(built(&log), ["api", "web", "worker"]);
    // The three images share their first layer.
    let layer0 = |s: &str| {
        let l = crate::util::archive_layers(&dir.join(format!("dist/{s}.oci.tar")));
        imgbuild::digest::Digest::of(&l[0])
    };
    assert_eq!(layer0("web"), layer0("api"));
    assert_eq!(layer0("web"), layer0("worker"));

    let (ok, log) = make(&env, &dir, &[]);
    assert!(ok && built(&log).is_empty(), "second make did work:\n{log}");
    assert!(make(&env, &dir, &["-q"]).0, "make -q says out of date");

    // A touch without a content change: make reruns imgbuild for api (its
    // input is newer), which leaves the archive alone, so nothing downstream
    // of the archive reruns.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let sums = std::fs::read(dir.join("dist/SHA256SUMS")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.join("api.txt"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let before = std::fs::metadata(dir.join("dist/api.oci.tar"))
        .unwrap()
        .modified()
        .unwrap();
    let (ok, log) = make(&env, &dir, &[]);
    assert!(ok, "{log}");
    assert_eq!(built(&log), ["api"]);
    assert!(
        !log.contains("sha256sum"),
        "an unchanged archive reran its dependents:\n{log}"
    );
    assert_eq!(
        std::fs::metadata(dir.join("dist/api.oci.tar"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );

    // Only api uses api.txt.
    std::fs::write(dir.join("api.txt"), "api service, v2\n").unwrap();
    let (ok, log) = make(&env, &dir, &["-j3"]);
    assert!(ok, "{log}");
    assert_eq!(built(&log), ["api"]);
    assert!(log.contains("sha256sum"), "{log}");
    assert_ne!(std::fs::read(dir.join("dist/SHA256SUMS")).unwrap(), sums);

    // Everyone uses shared/; a new file in it counts too.
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(dir.join("shared/extra.conf"), "extra\n").unwrap();
    let (ok, log) = make(&env, &dir, &["-j3"]);
    assert!(ok, "{log}");
    assert_eq!(built(&log), ["api", "web", "worker"]);
    let (ok, log) = make(&env, &dir, &[]);
    assert!(ok && built(&log).is_empty(), "{log}");
}
