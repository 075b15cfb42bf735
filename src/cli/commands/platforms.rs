//! `imgbuild platforms`: the host's platform and every platform QEMU
//! emulates, each with whether RUN steps can run for it here.

use crate::cli::args::{PlatformsArgs, PlatformsFormat};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::out;
use crate::exec::binfmt::{self, Binfmt, Support};
use crate::platform::{self, Platform};

/// A platform's support, or why not: the short reason and the whole
/// message (what to do).
type Status = Result<Support, (String, String)>;

/// Lists the platforms with their status; exits 0 whatever they are.
pub fn run(env: &Env, a: &PlatformsArgs) -> Result<(), Failure> {
    let host = platform::host();
    let mut platforms = vec![host.clone()];
    for s in binfmt::EMULATED {
        let p = Platform::parse(s).map_err(|e| Failure::Failed(e.into()))?;
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    // Read once; a directory that cannot be read leaves the native
    // platforms native and every other one unavailable for that reason.
    let table = Binfmt::read(&env.binfmt_misc());
    let rows: Vec<(Platform, Status)> = platforms
        .into_iter()
        .map(|p| {
            let status = match &table {
                _ if binfmt::is_native(&p, &host) => Ok(Support::Native),
                Ok(t) => t.support(&p, &host).map_err(|e| (e.short(), e.to_string())),
                Err(e) => Err((e.short(), e.to_string())),
            };
            (p, status)
        })
        .collect();
    let mut text = String::new();
    match a.format {
        PlatformsFormat::Table => {
            let width = rows.iter().map(|(p, _)| p.to_string().len()).max();
            let width = width.unwrap_or(0) + 2;
            for (p, status) in &rows {
                let status = match status {
                    Ok(Support::Native) => "native".to_string(),
                    Ok(Support::Emulated {
                        handler,
                        interpreter,
                    }) => format!("emulated ({handler}, {})", interpreter.display()),
                    Err((reason, _)) => format!("unavailable: {reason}"),
                };
                text.push_str(&format!("{:<width$}{status}\n", p.to_string()));
            }
        }
        PlatformsFormat::Json => {
            for (p, status) in &rows {
                let v = match status {
                    Ok(Support::Native) => {
                        serde_json::json!({"platform": p.to_string(), "status": "native"})
                    }
                    Ok(Support::Emulated {
                        handler,
                        interpreter,
                    }) => serde_json::json!({
                        "platform": p.to_string(), "status": "emulated",
                        "handler": handler, "interpreter": interpreter,
                    }),
                    Err((reason, message)) => serde_json::json!({
                        "platform": p.to_string(), "status": "unavailable",
                        "reason": reason, "message": message,
                    }),
                };
                text.push_str(&v.to_string());
                text.push('\n');
            }
        }
    }
    out(&text)
}
