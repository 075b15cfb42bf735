//! The spec's variables: `${NAME}` in the strings that may vary per build
//! (`from`, `platform`, copy `src`/`dest`/`from`, `run`). Today the names
//! are the platform variables BuildKit predefines (`TARGETARCH` …); build
//! args will join them. `$${` writes a literal `${`.
//!
//! Written by hand: the syntax is deliberately smaller than a shell's (no
//! defaults, no `$NAME` without braces), so that a `run` command's own shell
//! variables (`$HOME`, `${HOME}`) reach the shell untouched.

use crate::platform::Platform;

/// The values of the spec's variables for one platform of a build.
#[derive(Debug, Clone)]
pub struct Vars {
    values: Vec<(&'static str, String)>,
}

/// Why a string's variables could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// `${` without a closing `}`.
    #[error("`${{` without a closing `}}`")]
    Unclosed,
    /// A name that is not a variable.
    #[error("`${{{0}}}` is not a spec variable")]
    Unknown(String),
}

impl Vars {
    /// The platform variables for building on `build` for `target`.
    pub fn platforms(build: &Platform, target: &Platform) -> Vars {
        let mut values = Vec::new();
        for (names, p) in [
            (
                ["BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"],
                build,
            ),
            (
                ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"],
                target,
            ),
        ] {
            let [platform, os, arch, variant] = names;
            values.push((platform, p.to_string()));
            values.push((os, p.os.clone()));
            values.push((arch, p.arch.clone()));
            values.push((variant, p.variant.clone()));
        }
        Vars { values }
    }

    /// The names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.values.iter().map(|(n, _)| *n).collect()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Expands `${NAME}` in `s`. With `strict`, every `${…}` must name a
    /// variable; without (a `run` command), other `${…}` and every other
    /// `$` are left for the shell.
    ///
    /// # Errors
    /// An unclosed `${`, or (with `strict`) an unknown name.
    pub fn expand(&self, s: &str, strict: bool) -> Result<String, VarError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix("${") {
                // `$${` → a literal `${`.
                out.push_str("${");
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(end) = body.find('}') else {
                if strict {
                    return Err(VarError::Unclosed);
                }
                out.push('$');
                rest = after;
                continue;
            };
            let name = &body[..end];
            match self.get(name) {
                Some(v) => out.push_str(v),
                None if strict => return Err(VarError::Unknown(name.to_string())),
                None => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::platforms(
            &Platform::parse("linux/amd64").unwrap(),
            &Platform::parse("linux/arm/v7").unwrap(),
        )
    }

    #[test]
    fn platform_variables_expand() {
        let v = vars();
        assert_eq!(
            v.expand("base-${TARGETARCH}${TARGETVARIANT}:${BUILDARCH}", true)
                .unwrap(),
            "base-armv7:amd64"
        );
        assert_eq!(
            v.expand(
                "${TARGETPLATFORM} ${TARGETOS} ${BUILDPLATFORM} [${BUILDVARIANT}]",
                true
            )
            .unwrap(),
            "linux/arm/v7 linux linux/amd64 []"
        );
    }

    #[test]
    fn strict_strings_name_only_variables() {
        let v = vars();
        assert_eq!(
            v.expand("${HOME}", true),
            Err(VarError::Unknown("HOME".into()))
        );
        assert_eq!(v.expand("a${TARGETARCH", true), Err(VarError::Unclosed));
        assert_eq!(
            v.expand("$$ $${TARGETARCH} $x", true).unwrap(),
            "$$ ${TARGETARCH} $x"
        );
    }

    #[test]
    fn run_commands_keep_the_shells_variables() {
        let v = vars();
        assert_eq!(
            v.expand("echo $HOME ${HOME} ${TARGETARCH} ${x", false)
                .unwrap(),
            "echo $HOME ${HOME} arm ${x"
        );
    }
}
