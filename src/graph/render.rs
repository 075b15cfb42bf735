//! Dockerfile-syntax text of a step (`COPY foo.txt /foo.txt`), as image history
//! and progress show it. Rendered from the lowered step, not from the source
//! text, so a Dockerfile and a spec that mean the same thing produce the same
//! history and therefore the same image ID.

use super::{
    Command, ConfigChange, CopyFrom, CopyItem, CopyStep, FetchItem, FetchStep, Network, Remote,
    RunStep, StepKind,
};

pub(super) fn created_by(kind: &StepKind) -> String {
    match kind {
        StepKind::Copy(c) => copy(c),
        StepKind::Run(r) => run(r),
        StepKind::Config(c) => config(c),
        StepKind::Fetch(f) => fetch(f),
    }
}

/// `ADD [flags] URL… DEST`, as BuildKit records an ADD of a URL, with the
/// flags written the way COPY's are.
fn fetch(f: &FetchStep) -> String {
    let word = if f.link { "ADD --link" } else { "ADD" };
    f.items
        .iter()
        .map(|i| fetch_item(word, i))
        .collect::<Vec<_>>()
        .join("; ")
}

fn fetch_item(word: &str, i: &FetchItem) -> String {
    let mut out = String::from(word);
    if let Some(o) = &i.owner {
        out.push_str(&format!(" --chown={o}"));
    }
    if let Some(m) = &i.mode {
        out.push_str(&format!(" --chmod={m}"));
    }
    for s in &i.sources {
        match s {
            Remote::Http(h) => {
                if let Some(c) = &h.checksum {
                    out.push_str(&format!(" --checksum={c}"));
                }
            }
            Remote::Git(_) => {}
        }
    }
    // One flag for the instruction, as it is written.
    if i.sources
        .iter()
        .any(|s| matches!(s, Remote::Git(g) if g.keep_git_dir))
    {
        out.push_str(" --keep-git-dir=true");
    }
    let mut args: Vec<String> = i.sources.iter().map(Remote::to_string).collect();
    args.push(i.dest.clone());
    if args.iter().any(|a| a.chars().any(char::is_whitespace)) {
        out.push(' ');
        out.push_str(&json_array(&args));
    } else {
        for a in args {
            out.push(' ');
            out.push_str(&a);
        }
    }
    out
}

fn copy(c: &CopyStep) -> String {
    let word = match (c.add, c.link) {
        (false, false) => "COPY",
        (false, true) => "COPY --link",
        (true, false) => "ADD",
        (true, true) => "ADD --link",
    };
    c.items
        .iter()
        .map(|i| copy_item(word, i))
        .collect::<Vec<_>>()
        .join("; ")
}

fn copy_item(word: &str, i: &CopyItem) -> String {
    let mut out = String::from(word);
    match &i.from {
        CopyFrom::Context => {}
        CopyFrom::Stage { name, .. } | CopyFrom::Local { name, .. } => {
            out.push_str(&format!(" --from={name}"))
        }
        CopyFrom::Image { source } => out.push_str(&format!(" --from={source}")),
        CopyFrom::Inline { .. } => {}
    }
    if let Some(o) = &i.owner {
        out.push_str(&format!(" --chown={o}"));
    }
    if let Some(m) = &i.mode {
        out.push_str(&format!(" --chmod={m}"));
    }
    if i.parents {
        out.push_str(" --parents");
    }
    for e in &i.excludes {
        out.push_str(&format!(" --exclude={e}"));
    }
    let heredoc_names: Vec<String>;
    let mut args: Vec<&str> = if matches!(i.from, CopyFrom::Inline { .. }) {
        heredoc_names = i.sources.iter().map(|s| format!("<<{s}")).collect();
        heredoc_names.iter().map(String::as_str).collect()
    } else {
        i.sources.iter().map(String::as_str).collect()
    };
    args.push(&i.dest);
    if args.iter().any(|a| a.chars().any(char::is_whitespace)) {
        out.push(' ');
        out.push_str(&json_array(&args));
    } else {
        for a in args {
            out.push(' ');
            out.push_str(a);
        }
    }
    out
}

fn run(r: &RunStep) -> String {
    let mut out = String::from("RUN");
    if r.network == Network::None {
        out.push_str(" --network=none");
    }
    if !r.env.is_empty() {
        // Build-time variables, shown the way BuildKit shows build args.
        out.push_str(&format!(" |{}", r.env.len()));
        for (k, v) in &r.env {
            out.push_str(&format!(" {k}={}", quote(v)));
        }
    }
    out.push(' ');
    out.push_str(&command(&r.command));
    out
}

fn command(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Exec(args) => json_array(args),
    }
}

fn config(c: &ConfigChange) -> String {
    match c {
        ConfigChange::Env(kv) => format!("ENV {}", pairs(kv)),
        ConfigChange::Label(kv) => format!("LABEL {}", pairs(kv)),
        ConfigChange::Entrypoint(cmd) => format!("ENTRYPOINT {}", command(cmd)),
        ConfigChange::Cmd(cmd) => format!("CMD {}", command(cmd)),
        ConfigChange::Workdir(w) | ConfigChange::WorkdirCreate(w) => format!("WORKDIR {w}"),
        ConfigChange::User(u) => format!("USER {u}"),
        ConfigChange::Expose(p) => format!("EXPOSE {}", p.join(" ")),
        ConfigChange::Volume(v) => format!("VOLUME {}", json_array(v)),
        ConfigChange::StopSignal(s) => format!("STOPSIGNAL {s}"),
        ConfigChange::Shell(s) => format!("SHELL {}", json_array(s)),
        ConfigChange::Maintainer(m) => format!("MAINTAINER {m}"),
        ConfigChange::Healthcheck(None) => "HEALTHCHECK NONE".to_string(),
        ConfigChange::Healthcheck(Some(h)) => {
            let mut out = String::from("HEALTHCHECK");
            for (flag, ns) in [
                ("interval", h.interval),
                ("timeout", h.timeout),
                ("start-period", h.start_period),
                ("start-interval", h.start_interval),
            ] {
                if ns > 0 {
                    out.push_str(&format!(" --{flag}={}", duration(ns)));
                }
            }
            if h.retries > 0 {
                out.push_str(&format!(" --retries={}", h.retries));
            }
            match h.test.split_first() {
                Some((first, rest)) if first == "CMD-SHELL" => {
                    out.push_str(&format!(" CMD {}", rest.join(" ")))
                }
                Some((_, rest)) => out.push_str(&format!(" CMD {}", json_array(rest))),
                None => {}
            }
            out
        }
        ConfigChange::OnBuild(t) => format!("ONBUILD {t}"),
    }
}

/// A Go-style duration (`30s`, `1m30s`, `500ms`) from nanoseconds.
fn duration(ns: u64) -> String {
    if ns % 1_000_000_000 != 0 {
        return format!("{}ms", ns / 1_000_000);
    }
    let s = ns / 1_000_000_000;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn pairs(kv: &[(String, String)]) -> String {
    kv.iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Double-quotes a word when a Dockerfile would need it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$' | '='));
    if plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn json_array<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sources: &[&str], dest: &str) -> CopyItem {
        CopyItem::from_context(sources, dest)
    }

    #[test]
    fn copy_reads_like_a_dockerfile() {
        let c = StepKind::Copy(CopyStep {
            items: vec![item(&["foo.txt"], "/foo.txt")],
            name: None,
            add: false,
            link: false,
        });
        assert_eq!(created_by(&c), "COPY foo.txt /foo.txt");
        let mut i = item(&["a b"], "/x/");
        i.mode = Some(super::super::Chmod::Octal(0o755));
        i.owner = super::super::Owner::parse("1:2");
        let c = StepKind::Copy(CopyStep {
            items: vec![i],
            name: None,
            add: false,
            link: false,
        });
        assert_eq!(
            created_by(&c),
            r#"COPY --chown=1:2 --chmod=755 ["a b","/x/"]"#
        );
    }

    #[test]
    fn fetch_reads_like_add() {
        let sum = format!("sha256:{}", "0".repeat(64));
        let h = super::super::HttpSource::parse("https://h/x.tgz", Some(&sum)).unwrap();
        let f = StepKind::Fetch(FetchStep {
            items: vec![FetchItem {
                sources: vec![Remote::Http(h)],
                dest: "/opt/".into(),
                mode: Some(super::super::Chmod::Octal(0o644)),
                owner: super::super::Owner::parse("app"),
            }],
            name: None,
            link: false,
        });
        assert_eq!(
            created_by(&f),
            format!("ADD --chown=app --chmod=644 --checksum={sum} https://h/x.tgz /opt/")
        );
    }

    #[test]
    fn git_fetch_reads_like_add_with_the_password_redacted() {
        let g = super::super::GitSource::parse("https://u:tok@h/x.git#v1:/docs/", true).unwrap();
        let f = StepKind::Fetch(FetchStep {
            items: vec![FetchItem {
                sources: vec![Remote::Git(g)],
                dest: "/src".into(),
                mode: None,
                owner: None,
            }],
            name: None,
            link: true,
        });
        assert_eq!(
            created_by(&f),
            "ADD --link --keep-git-dir=true https://u:xxxxx@h/x.git#v1:docs /src"
        );
    }

    #[test]
    fn config_quotes_values() {
        let e = StepKind::Config(ConfigChange::Env(vec![
            ("A".into(), "x y".into()),
            ("B".into(), "1".into()),
        ]));
        assert_eq!(created_by(&e), r#"ENV A="x y" B=1"#);
        let c = StepKind::Config(ConfigChange::Cmd(Command::Exec(vec!["/hello".into()])));
        assert_eq!(created_by(&c), r#"CMD ["/hello"]"#);
    }
}
