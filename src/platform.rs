//! The platform images are built for: this host's, in OCI/GOARCH terms.
//! Leaf module.

/// `linux` and the host's GOARCH name (`amd64`, `arm64`, …), plus a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: &'static str,
    /// GOARCH name.
    pub arch: &'static str,
    /// CPU variant (`v8` for arm64), empty when none.
    pub variant: &'static str,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub fn to_string_full(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.arch)
        } else {
            format!("{}/{}/{}", self.os, self.arch, self.variant)
        }
    }
}

/// The host's platform.
pub fn host() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        other => (other, ""),
    };
    Platform {
        os: "linux",
        arch,
        variant,
    }
}
