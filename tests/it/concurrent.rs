//! Several imgbuild processes (make -j) share one store safely.

use crate::util::{TestEnv, assert_success};

crate::it_test!(four_builds_at_once_on_one_store);
fn four_builds_at_once_on_one_store() {
    let env = TestEnv::new();
    for i in 0..4 {
        env.write(&format!("ctx/own{i}.txt"), format!("{i}\n").repeat(50_000));
    }
    env.write("ctx/shared/a.txt", "shared\n".repeat(100_000));
    for i in 0..4 {
        // Overlapping: every spec shares the first layer, two share the second.
        env.write(
            &format!("ctx/spec{i}.toml"),
            format!(
                "[build]\nsource_date_epoch = 0\n[image.i{i}]\nfrom = \"scratch\"\noutput = \"out{i}.tar\"\n\
                 [[image.i{i}.step]]\ncopy = [{{ src = \"shared\", dest = \"/shared/\" }}]\n\
                 [[image.i{i}.step]]\ncopy = [{{ src = \"own{}.txt\", dest = \"/own.txt\" }}]\n",
                i % 2
            ),
        );
    }
    let ctx = env.path().join("ctx");
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.cmd_in(
                &ctx,
                &["build", "--progress=quiet", &format!("spec{i}.toml")],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_success(&out, &["concurrent build"]);
    }
    let check = env.run(&["store", "check"]);
    assert_success(&check, &["store", "check"]);
    // The overlapping builds made the same images.
    assert_eq!(
        std::fs::read(ctx.join("out0.tar")).unwrap(),
        std::fs::read(ctx.join("out2.tar")).unwrap()
    );
}

crate::it_test!(store_check_finds_a_corrupt_blob);
fn store_check_finds_a_corrupt_blob() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "a\n");
    env.write("ctx/spec.toml", "[image.x]\nfrom = \"scratch\"\noutput = \"x.tar\"\n[[image.x.step]]\ncopy = [{ src = \"a.txt\", dest = \"/\" }]\n");
    env.ok(&["build", env.path().join("ctx/spec.toml").to_str().unwrap()]);
    assert!(env.run(&["store", "check"]).status.success());
    let blobs = env.store().join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&victim, b"flipped bits").unwrap();
    let out = env.run(&["store", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
}
