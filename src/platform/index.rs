//! Choosing a platform's manifest from an image index (OCI index or Docker
//! manifest list), the one rule for pulls, archive and layout imports.

use serde_json::Value;

use super::Platform;
use crate::digest::Digest;

/// The platforms an index's entries name, in order (entries without a
/// platform left out).
pub fn platforms(index: &Value) -> Vec<Platform> {
    entries(index).map(|(p, _, _)| p).collect()
}

/// Each entry of an index that names a platform: the platform, the
/// manifest's digest (when valid) and the entry itself.
pub fn entries(index: &Value) -> impl Iterator<Item = (Platform, Option<Digest>, &Value)> {
    index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let p = e.get("platform")?;
            let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
            if field("os").is_empty() && field("architecture").is_empty() {
                return None;
            }
            let platform = Platform::new(field("os"), field("architecture"), field("variant"));
            let digest = e["digest"].as_str().and_then(|d| d.parse().ok());
            Some((platform, digest, e))
        })
}

/// The first entry of `index` that serves `want` ([`Platform::accepts`]):
/// its digest and media type. Err: the platforms the index has, for the
/// message.
///
/// # Errors
/// No entry serves `want`.
pub fn select(index: &Value, want: &Platform) -> Result<(Digest, String), Vec<Platform>> {
    for (p, digest, e) in entries(index) {
        if want.accepts(&p)
            && let Some(d) = digest
        {
            let mt = e["mediaType"].as_str().unwrap_or_default().to_string();
            return Ok((d, mt));
        }
    }
    Err(platforms(index))
}

/// `a, b, c` of platforms, for messages.
pub fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "none".to_string();
    }
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_chosen_as_docker_chooses() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": d('b'), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": d('c'), "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": d('d'), "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": d('e')},
        ]});
        let want = |s: &str| Platform::parse(s).unwrap();
        let pick = |s: &str| select(&index, &want(s)).map(|(d, _)| d.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), d('c'));
        assert_eq!(pick("linux/arm64").unwrap(), d('b'));
        assert_eq!(pick("linux/arm64/v8").unwrap(), d('b'));
        assert_eq!(pick("linux/armhf").unwrap(), d('a'));
        let err = select(&index, &want("linux/s390x")).unwrap_err();
        assert_eq!(
            list(&err),
            "linux/arm/v7, linux/arm64, linux/amd64, unknown/unknown"
        );
    }
}
