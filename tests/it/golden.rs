//! Golden images: the layer listings and the image ID of fixed inputs. Any
//! change to the bytes imgbuild writes shows up here (re-bless with
//! IMGBUILD_BLESS=1 when the change is intended, and say why in the commit).

use crate::util::{
    TestEnv, archive_layers, assert_success, copy_tree, fixtures, golden, layer_listing,
};

crate::it_test!(basic);
fn basic() {
    let env = TestEnv::new();
    let dir = fixtures().join("golden/basic");
    let ctx = env.path().join("ctx");
    copy_tree(&dir.join("ctx"), &ctx);
    let out = env.run_in(&ctx, &["--progress=quiet", "spec.toml"]);
    assert_success(&out, &["build golden"]);
    let archive = ctx.join("golden.tar");
    let mut listing = String::new();
    for (i, layer) in archive_layers(&archive).iter().enumerate() {
        listing.push_str(&format!("# layer {i}\n"));
        for l in layer_listing(layer) {
            listing.push_str(&l);
            listing.push('\n');
        }
    }
    golden(&dir.join("listing"), &listing);
    let id = env.ok(&["inspect", "golden:1"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let digest = imgbuild::digest::Digest::of(&std::fs::read(&archive).unwrap());
    golden(
        &dir.join("digest"),
        &format!(
            "image {}\narchive {digest}\n",
            id[0]["Id"].as_str().unwrap()
        ),
    );
}
