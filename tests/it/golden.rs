//! Golden images: the layer listings, the config and the image ID of fixed
//! inputs. Any change to the bytes imgbuild writes shows up here (re-bless
//! with IMGBUILD_BLESS=1 when the change is intended, and say why in the
//! commit).
//!
//! Every folder under `tests/fixtures/golden/` is a case: `ctx/` is copied
//! to a scratch directory, `args` (one line, split on whitespace) is run
//! there with SOURCE_DATE_EPOCH set, and the build must write `golden.tar`
//! and tag `golden:1`. Its goldens: `listing` (every layer's entries),
//! `config` (`inspect golden:1`) and `digest` (image ID and archive digest).

use crate::util::{
    TestEnv, archive_layers, assert_success, copy_tree, every_case, fixtures, golden, layer_listing,
};

crate::it_test!(golden_images);
fn golden_images() {
    every_case(
        &fixtures().join("golden"),
        &["ctx", "args"],
        &["listing", "config", "digest"],
        |_, dir| {
            let env = TestEnv::new();
            let ctx = env.path().join("ctx");
            copy_tree(&dir.join("ctx"), &ctx);
            let args = std::fs::read_to_string(dir.join("args")).unwrap();
            let args: Vec<&str> = args.split_whitespace().collect();
            let out = env
                .cmd_in(&ctx, &args)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            assert_success(&out, &args);
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
            let inspect = env.ok(&["inspect", "golden:1"]);
            golden(&dir.join("config"), &inspect);
            let id: serde_json::Value = serde_json::from_str(&inspect).unwrap();
            let digest = imgbuild::digest::Digest::of(&std::fs::read(&archive).unwrap());
            golden(
                &dir.join("digest"),
                &format!(
                    "image {}\narchive {digest}\n",
                    id[0]["Id"].as_str().unwrap()
                ),
            );
        },
    );
}
