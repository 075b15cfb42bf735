//! `imgbuild load` and archive bases: OCI archives, docker archives and OCI
//! layout directories come into the store with the same image ID.

use crate::util::{TestEnv, assert_success, tool};

fn demo(env: &TestEnv) -> (std::path::PathBuf, String) {
    env.write("ctx/foo.txt", "Hello World\n");
    env.write(
        "ctx/spec.toml",
        "[build]\nsource_date_epoch = 0\n[image.demo]\nfrom = \"scratch\"\ntags = [\"demo:1\"]\noutput = \"demo.tar\"\n\
         cmd = [\"/foo.txt\"]\n[[image.demo.step]]\ncopy = [{ src = \"foo.txt\", dest = \"/foo.txt\" }]\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["--progress=quiet", "spec.toml"]);
    assert_success(&out, &["build demo"]);
    let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hex = full
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("quiet prints the full ID: {full:?}"));
    assert_eq!(hex.len(), 64, "quiet prints the full ID: {full:?}");
    (env.path().join("ctx/demo.tar"), hex[..12].to_string())
}

crate::it_test!(load_round_trips_oci_and_docker_archives);
fn load_round_trips_oci_and_docker_archives() {
    let env = TestEnv::new();
    let (archive, id) = demo(&env);
    let other = env.path().join("other-store");
    let load = |file: &std::path::Path| {
        let mut c = env.cmd_in(env.path(), &["load", file.to_str().unwrap()]);
        c.env("IMGBUILD_STORE", &other);
        let out = c.output().unwrap();
        assert_success(&out, &["load"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(load(&archive), "Loaded image: demo:1\n");
    let images = {
        let mut c = env.cmd_in(env.path(), &["images"]);
        c.env("IMGBUILD_STORE", &other);
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(images.contains("demo") && images.contains(&id), "{images}");

    // A docker archive written by skopeo loads as the same image.
    let docker = env.path().join("docker.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &crate::util::oci_archive_ref(&archive),
            &format!("docker-archive:{}:demo:2", docker.display()),
        ],
    );
    assert_eq!(load(&docker), "Loaded image: demo:2\n");
    let mut c = env.cmd_in(env.path(), &["inspect", "demo:2"]);
    c.env("IMGBUILD_STORE", &other);
    let v: serde_json::Value = serde_json::from_slice(&c.output().unwrap().stdout).unwrap();
    assert!(
        v[0]["Id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("sha256:{id}"))
    );
}

crate::it_test!(bases_from_every_transport);
fn bases_from_every_transport() {
    let env = TestEnv::new();
    let (archive, _) = demo(&env);
    let ctx = env.path().join("ctx");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &crate::util::oci_archive_ref(&archive),
            &format!("docker-archive:{}:demo:1", ctx.join("d.tar").display()),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &crate::util::oci_archive_ref(&archive),
            &format!("oci:{}:v1", ctx.join("layout").display()),
        ],
    );
    env.write("ctx/bar.txt", "bar\n");
    for (i, from) in [
        "oci-archive:demo.tar",
        "docker-archive:d.tar",
        "oci:layout:v1",
        "demo:1",
    ]
    .iter()
    .enumerate()
    {
        env.write(
            "ctx/child.toml",
            format!(
                "[build]\nsource_date_epoch = 0\n[image.child]\nfrom = \"{from}\"\noutput = \"child{i}.tar\"\n\
                 [[image.child.step]]\ncopy = [{{ src = \"bar.txt\", dest = \"/bar.txt\" }}]\n"
            ),
        );
        let out = env.run_in(&ctx, &["child.toml"]);
        assert_success(&out, &["build child from", from]);
        let cfg = tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                &format!(
                    "oci-archive:{}",
                    ctx.join(format!("child{i}.tar")).display()
                ),
            ],
        );
        let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            2,
            "from {from}"
        );
        assert_eq!(
            cfg["config"]["Cmd"],
            serde_json::json!(["/foo.txt"]),
            "config inherited from {from}"
        );
    }
    // All four children are the same image.
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let raw = tool(
                "skopeo",
                &[
                    "inspect",
                    "--raw",
                    &format!(
                        "oci-archive:{}",
                        ctx.join(format!("child{i}.tar")).display()
                    ),
                ],
            );
            let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
            m["config"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

crate::it_test!(a_missing_base_is_a_clear_error);
fn a_missing_base_is_a_clear_error() {
    let env = TestEnv::new();
    env.write(
        "ctx/spec.toml",
        "[image.x]\nfrom = \"nothere:1.0\"\noutput = \"x.tar\"\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["spec.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.toml:2:8") && err.contains("nothere:1.0") && err.contains("not found"),
        "{err}"
    );
    assert!(!env.path().join("ctx/x.tar").exists());
}

crate::it_test!(tag_only_ref_names_and_load_t);
/// An archive whose index names the image by a tag only (`ref.name =
/// latest`, as BuildKit writes it) loads as localhost/<file stem>:<tag>, as
/// podman names it; `-t` adds names, and load prints every name it applied.
fn tag_only_ref_names_and_load_t() {
    let env = TestEnv::new();
    let (archive, id) = demo(&env);
    // Rewrite the index: ref.name `latest`, no containerd name.
    let layout = env.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    tool(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ],
    );
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::remove_file(layout.join("manifest.json")).unwrap();
    let tagged = env.path().join("My_Base.oci.tar");
    tool(
        "tar",
        &[
            "-cf",
            tagged.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
            ".",
        ],
    );

    let fresh = |name: &str| env.path().join(name);
    let load = |store: &std::path::Path, args: &[&str]| {
        let mut c = env.cmd_in(env.path(), args);
        c.env("IMGBUILD_STORE", store);
        c.output().unwrap()
    };
    let out = load(&fresh("s1"), &["load", tagged.to_str().unwrap()]);
    assert_success(&out, &["load"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: localhost/my_base:latest\n"
    );
    // The layout directory itself: named after the directory.
    let out = load(&fresh("s2"), &["load", layout.to_str().unwrap()]);
    assert_success(&out, &["load DIR"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: localhost/layout:latest\n"
    );
    // -t: one more name, every name printed, the image findable by each.
    let s3 = fresh("s3");
    let out = load(
        &s3,
        &[
            "load",
            "-t",
            "base:7",
            "-t",
            "reg.example.com/b:1",
            tagged.to_str().unwrap(),
        ],
    );
    assert_success(&out, &["load -t"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: localhost/my_base:latest\nLoaded image: base:7\nLoaded image: reg.example.com/b:1\n"
    );
    for name in ["localhost/my_base:latest", "base:7", "reg.example.com/b:1"] {
        let out = load(&s3, &["inspect", name]);
        assert_success(&out, &["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v[0]["Id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("sha256:{id}"))
        );
    }
    // A bad name is a usage error, and nothing is loaded.
    let s4 = fresh("s4");
    let out = load(&s4, &["load", "-t", "Bad Name", tagged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = load(&s4, &["images", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}
