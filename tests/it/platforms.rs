//! Foreign platforms: `imgbuild platforms` over a fabricated binfmt_misc
//! directory (`IMGBUILD_BINFMT_MISC`).

use std::path::Path;

use imgbuild::platform::host;

use crate::util::{TestEnv, assert_success};

/// Entries as the kernel prints them (Debian 12, qemu-user-static), one
/// with the fix-binary flag, one without, one disabled.
const AARCH64_F: &str = "enabled\n\
    interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
    flags: PF\n\
    offset 0\n\
    magic 7f454c460201010000000000000000000200b700\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";
const ARM_NO_F: &str = "enabled\n\
    interpreter /usr/bin/qemu-arm\n\
    flags: P\n\
    offset 0\n\
    magic 7f454c4601010100000000000000000002002800\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";
const RISCV64_DISABLED: &str = "disabled\n\
    interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\n\
    flags: PF\n\
    offset 0\n\
    magic 7f454c460201010000000000000000000200f300\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";

/// The listing's first line is the host: the expected text is written for
/// the amd64 machines CI runs on.
fn amd64_host() -> Option<String> {
    (host().arch != "amd64")
        .then(|| format!("the expected listing is an amd64 host's, not {}", host()))
}

fn platforms(env: &TestEnv, binfmt_misc: &Path, args: &[&str]) -> String {
    let mut c = env.cmd_in(env.path(), &[&["platforms"], args].concat());
    c.env("IMGBUILD_BINFMT_MISC", binfmt_misc);
    let out = c.output().unwrap();
    assert_success(&out, &["platforms"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

crate::it_test!(platforms_lists_what_binfmt_misc_can_run, needs = amd64_host);
fn platforms_lists_what_binfmt_misc_can_run() {
    let env = TestEnv::new();
    let dir = env.path().join("binfmt_misc");
    env.write("binfmt_misc/status", "enabled\n");
    env.write("binfmt_misc/register", "");
    env.write("binfmt_misc/qemu-aarch64", AARCH64_F);
    env.write("binfmt_misc/qemu-arm", ARM_NO_F);
    env.write("binfmt_misc/qemu-riscv64", RISCV64_DISABLED);
    assert_eq!(
        platforms(&env, &dir, &[]),
        "\
linux/amd64     native
linux/arm64     emulated (qemu-aarch64, /usr/libexec/qemu-binfmt/aarch64-binfmt-P)
linux/arm/v7    unavailable: qemu-arm lacks the fix-binary (F) flag
linux/arm/v6    unavailable: qemu-arm lacks the fix-binary (F) flag
linux/386       native
linux/ppc64le   unavailable: no binfmt_misc handler for ppc64le
linux/ppc64     unavailable: no binfmt_misc handler for ppc64
linux/s390x     unavailable: no binfmt_misc handler for s390x
linux/riscv64   unavailable: qemu-riscv64 is disabled
linux/mips64le  unavailable: no binfmt_misc handler for mips64el
linux/mips64    unavailable: no binfmt_misc handler for mips64
linux/mipsle    unavailable: no binfmt_misc handler for mipsel
linux/mips      unavailable: no binfmt_misc handler for mips
linux/loong64   unavailable: no binfmt_misc handler for loongarch64
"
    );
    // JSON: one object a line, the whole message (what to do) included.
    let json = platforms(&env, &dir, &["--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 14);
    assert_eq!(rows[1]["status"], "emulated");
    assert_eq!(rows[1]["handler"], "qemu-aarch64");
    let arm = rows[2]["message"].as_str().unwrap();
    assert!(arm.contains("re-register it with the F flag"), "{arm}");
    let riscv = rows[8]["message"].as_str().unwrap();
    assert!(
        riscv.contains("`update-binfmts --enable qemu-riscv64`"),
        "{riscv}"
    );
    let ppc = rows[5]["message"].as_str().unwrap();
    assert!(
        ppc.contains("`apt-get install qemu-user-static binfmt-support`"),
        "{ppc}"
    );
    // Not mounted (no status file): only the native platforms run.
    let empty = env.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let text = platforms(&env, &empty, &[]);
    assert!(text.starts_with("linux/amd64     native\n"), "{text}");
    assert!(
        text.contains("linux/arm64     unavailable: binfmt_misc is not mounted\n"),
        "{text}"
    );
}
