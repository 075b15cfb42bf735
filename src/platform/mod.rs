//! Platforms images are built for (`os/arch[/variant]`, in OCI/GOARCH
//! terms): parsing and normalization as containerd's `platforms` package
//! does them, and this host's platform. Leaf module.

pub mod index;

use std::fmt;

/// An OCI platform, normalized: `arm64` and `arm64/v8` are the same
/// `Platform` (variant empty), `armhf` is `arm/v7`, `x86_64` is `amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// GOARCH name (`amd64`, `arm64`, `arm`, …).
    pub arch: String,
    /// CPU variant (`v7` for arm), empty when none or the default.
    pub variant: String,
}

/// A platform string that does not name a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Empty, or an empty component.
    #[error("platform `{0}`: expected os/arch[/variant]")]
    Malformed(String),
    /// More than three components.
    #[error("platform `{0}`: too many components (expected os/arch[/variant])")]
    TooLong(String),
    /// A component with characters no platform has.
    #[error("platform `{0}`: `{1}` is not a valid component")]
    BadComponent(String, String),
}

/// Operating systems a single-component platform may name (containerd's
/// `isKnownOS`); any other single component is an architecture.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

impl Platform {
    /// A normalized platform from its parts, as an image config or index
    /// entry gives them.
    ///
    /// The parts may come from an image or a registry: each is cut to
    /// [`MAX_COMPONENT`] bytes and every character no platform has (control
    /// characters, escapes, `/`) becomes `?`, so a hostile value can
    /// neither forge a message nor reach a terminal as an escape.
    pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
        let (os, arch, variant) = (clean(os), clean(arch), clean(variant));
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        let (arch, variant) =
            normalize_arch(&arch.to_ascii_lowercase(), &variant.to_ascii_lowercase());
        Platform { os, arch, variant }
    }

    /// Parses `os/arch[/variant]`, `os` or `arch` (the missing parts are the
    /// host's), normalized as containerd's `platforms.Parse` + `Normalize`.
    ///
    /// # Errors
    /// An empty string or component, more than three components, or a
    /// component with characters other than letters, digits, `_`, `-`, `.`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError::Malformed(s.to_string()));
        }
        if let Some(bad) = parts.iter().find(|p| {
            !p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        }) {
            return Err(PlatformError::BadComponent(s.to_string(), bad.to_string()));
        }
        let host = host();
        match parts.as_slice() {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if KNOWN_OS.contains(&lower.as_str()) || lower == "macos" {
                    // The host's architecture only makes sense on its OS.
                    let (arch, variant) = if Platform::new(&lower, "", "").os == host.os {
                        (host.arch.as_str(), host.variant.as_str())
                    } else {
                        (host.arch.as_str(), "")
                    };
                    Ok(Platform::new(&lower, arch, variant))
                } else {
                    Ok(Platform::new(&host.os, &lower, ""))
                }
            }
            [os, arch] => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            _ => Err(PlatformError::TooLong(s.to_string())),
        }
    }

    /// A comma-separated list (`--platform linux/amd64,linux/arm64`), each
    /// parsed by [`Platform::parse`]; duplicates (after normalization) are
    /// dropped, the first place kept.
    ///
    /// # Errors
    /// The first entry that does not parse.
    pub fn parse_list(s: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut out: Vec<Platform> = Vec::new();
        for part in s.split(',').map(str::trim) {
            let p = Platform::parse(part)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Whether an image for `image` serves a request for `self`: the same
    /// OS and architecture, and the same variant unless the image names
    /// none (containerd's matcher for a single platform).
    pub fn accepts(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.arch == image.arch
            && (self.variant == image.variant || image.variant.is_empty())
    }

    /// The name QEMU and binfmt_misc give this architecture
    /// (`qemu-aarch64`), for the architectures Debian's `qemu-user-static`
    /// emulates; `None` for others.
    pub fn qemu_arch(&self) -> Option<&'static str> {
        Some(match self.arch.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "arm" => "arm",
            "386" => "i386",
            "ppc64le" => "ppc64le",
            "ppc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "mips64le" => "mips64el",
            "mips64" => "mips64",
            "mipsle" => "mipsel",
            "mips" => "mips",
            "loong64" => "loongarch64",
            _ => return None,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The longest platform component kept (real ones are a few bytes).
pub const MAX_COMPONENT: usize = 64;

/// `s` cut to [`MAX_COMPONENT`] characters, each outside
/// `[A-Za-z0-9_.-]` replaced by `?`.
fn clean(s: &str) -> String {
    s.chars()
        .take(MAX_COMPONENT)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match arch {
        "i386" | "386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant {
                "8" | "v8" | "v8.0" => "",
                v => v,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant {
                "" | "7" => "v7",
                "5" | "6" | "8" => return ("arm".into(), format!("v{variant}")),
                v => v,
            },
        ),
        a => (a, variant),
    };
    (a.to_string(), v.to_string())
}

/// The host's platform (normalized: `linux/arm64`, not `linux/arm64/v8`).
pub fn host() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        "loongarch64" => ("loong64", ""),
        other => (other, ""),
    };
    Platform {
        os: "linux".to_string(),
        arch: arch.to_string(),
        variant: variant.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s)
            .map(|p| p.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn normalizes_as_containerd() {
        let h = host();
        // containerd's platforms_test.go cases that apply to Linux hosts.
        for (input, want) in [
            ("linux/amd64", "linux/amd64".to_string()),
            ("linux/x86_64", "linux/amd64".into()),
            ("linux/x86-64", "linux/amd64".into()),
            ("linux/amd64/v1", "linux/amd64".into()),
            ("linux/amd64/v3", "linux/amd64/v3".into()),
            ("linux/arm64", "linux/arm64".into()),
            ("linux/aarch64", "linux/arm64".into()),
            ("linux/arm64/v8", "linux/arm64".into()),
            ("linux/arm64/8", "linux/arm64".into()),
            ("linux/arm", "linux/arm/v7".into()),
            ("linux/arm/7", "linux/arm/v7".into()),
            ("linux/arm/6", "linux/arm/v6".into()),
            ("linux/arm/v5", "linux/arm/v5".into()),
            ("linux/armhf", "linux/arm/v7".into()),
            ("linux/armel", "linux/arm/v6".into()),
            ("linux/i386", "linux/386".into()),
            ("Linux/AMD64", "linux/amd64".into()),
            ("macos/arm64", "darwin/arm64".into()),
            ("windows/amd64", "windows/amd64".into()),
            ("arm64", "linux/arm64".into()),
            ("armhf", "linux/arm/v7".into()),
            ("linux", h.to_string()),
            ("windows", format!("windows/{}", h.arch)),
        ] {
            assert_eq!(p(input), want, "{input}");
        }
    }

    #[test]
    fn refuses_what_names_no_platform() {
        for bad in [
            "",
            "/",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
            "a,b",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_drop_duplicates_after_normalizing() {
        let l =
            Platform::parse_list("linux/amd64, linux/arm64,linux/aarch64,linux/x86_64").unwrap();
        let s: Vec<String> = l.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["linux/amd64", "linux/arm64"]);
        assert!(Platform::parse_list("linux/amd64,").is_err());
    }

    #[test]
    fn hostile_parts_are_made_harmless() {
        let long = "a".repeat(1000);
        let p = Platform::new("linux\u{1b}[31m", &long, "v7/../\n");
        assert_eq!(p.os, "linux??31m");
        assert_eq!(p.arch.len(), MAX_COMPONENT);
        assert_eq!(p.variant, "v7?..??");
    }

    #[test]
    fn an_image_without_variant_serves_any() {
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.accepts(&Platform::new("linux", "arm", "")));
        assert!(v7.accepts(&Platform::new("linux", "arm", "v7")));
        assert!(!v7.accepts(&Platform::new("linux", "arm", "v6")));
        assert!(!v7.accepts(&Platform::new("linux", "arm64", "")));
        assert!(
            Platform::parse("arm64")
                .unwrap()
                .accepts(&Platform::new("linux", "aarch64", "v8"))
        );
    }
}
