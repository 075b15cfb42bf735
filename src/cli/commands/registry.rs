//! `imgbuild pull`, `push`, `login`, `logout`: the registry commands, with
//! docker's output.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::Mutex;

use anyhow::Context;

use crate::cli::args::{Cli, LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{self, Client, Options, auth};
use crate::store::TagTarget;

fn parse_ref(s: &str) -> Result<Reference, Failure> {
    Reference::parse(s).map_err(|e| Failure::Usage(e.into()))
}

/// Prints a line at once (events arrive from transfer threads).
fn say(lock: &Mutex<()>, line: String) {
    let _g = lock.lock();
    let _ = out(&format!("{line}\n"));
}

/// Prints a retry notice on stdout (where pull's and push's lines go).
pub fn notice_to_stdout(r: &registry::Retrying<'_>) {
    let _ = out(&format!("{r}\n"));
}

/// Prints a retry notice on stderr (a build's progress stream, or beside
/// `--quiet` output).
pub fn notice_to_stderr(r: &registry::Retrying<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{r}");
}

/// Pulls an image and tags it, printing docker's lines.
pub fn pull(cli: &Cli, env: &Env, a: &PullArgs) -> Result<(), Failure> {
    let reference = parse_ref(&a.reference)?;
    let platform = super::parse_platform(a.platform.as_deref())?;
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let opts = Options {
        insecure: a.insecure_registry.clone(),
        retry: a.retry.policy(),
        docker_config: env.docker_config(),
    };
    let before = store.tag(&reference)?;
    let printing = Mutex::new(());
    let quiet = a.quiet;
    // On a terminal, a bar per layer being fetched (docker's look);
    // elsewhere the lines alone.
    let bars = (!quiet && std::io::stdout().is_terminal()).then(indicatif::MultiProgress::new);
    let notice_bars = bars.clone();
    let client =
        Client::new(reference.domain(), &opts).with_notices(move |r| match (&notice_bars, quiet) {
            (_, true) => notice_to_stderr(r),
            (Some(mp), false) => {
                let _ = mp.println(r.to_string());
            }
            (None, false) => notice_to_stdout(r),
        });
    let active: Mutex<HashMap<Digest, indicatif::ProgressBar>> = Mutex::new(HashMap::new());
    let line = |text: String| match &bars {
        Some(mp) => {
            let _ = mp.println(text);
        }
        None => say(&printing, text),
    };
    let on = |e: registry::pull::Event<'_>| {
        if quiet {
            return;
        }
        use registry::pull::Event;
        match e {
            Event::Resolved { .. } | Event::Exists(_) => line(e.line().unwrap_or_default()),
            Event::Complete(d) => {
                if let Ok(mut a) = active.lock()
                    && let Some(bar) = a.remove(d)
                {
                    bar.finish_and_clear();
                }
                line(e.line().unwrap_or_default());
            }
            Event::Progress(d, n, size) => {
                let (Some(mp), Ok(mut a)) = (&bars, active.lock()) else {
                    return;
                };
                let bar = a.entry(*d).or_insert_with(|| {
                    let b = mp.add(indicatif::ProgressBar::new(size));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix}: Downloading [{bar:40}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(d.short());
                    b
                });
                bar.set_position(n);
            }
        }
    };
    let pulled = registry::pull::pull(&store, &client, &reference, platform.as_ref(), &on)
        .with_context(|| format!("pulling {}", reference.familiar()))?;
    if quiet {
        return out(&format!("{reference}\n"));
    }
    let status = if pulled.fetched > 0 || before != Some(pulled.id) {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    out(&format!(
        "Digest: {}\nStatus: {status} {}\n{reference}\n",
        pulled.digest,
        reference.familiar()
    ))
}

/// Pushes an image (every platform of a multi-platform one, unless
/// `--platform` picks one), printing docker's lines.
pub fn push(cli: &Cli, env: &Env, a: &PushArgs) -> Result<(), Failure> {
    let dest = parse_ref(a.destination.as_deref().unwrap_or(&a.image))?;
    let platform = super::parse_platform(a.platform.as_deref())?;
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let target = match &platform {
        Some(p) => TagTarget::Image(super::resolve_image_for(&store, &a.image, Some(p))?),
        None => super::resolve_target(&store, &a.image)?,
    };
    let opts = Options {
        insecure: a.insecure_registry.clone(),
        retry: a.retry.policy(),
        docker_config: env.docker_config(),
    };
    let printing = Mutex::new(());
    let say = |line: String| say(&printing, line);
    let notice = if a.quiet {
        notice_to_stderr
    } else {
        notice_to_stdout
    };
    let digest = push_target(
        &store,
        target,
        &dest,
        &opts,
        (!a.quiet).then_some(&say),
        notice,
    )?;
    if a.quiet {
        out(&format!("{digest}\n"))?;
    }
    Ok(())
}

/// Pushes what a tag names to `dest`: an image as [`push_image`] does, or
/// a multi-platform image (each platform's manifest by digest, then the
/// index under the tag, whose digest is the last line and the result).
/// `push` and `build --push` share it.
pub fn push_target(
    store: &crate::store::Store,
    target: TagTarget,
    dest: &Reference,
    opts: &Options,
    say: Option<&(dyn Fn(String) + Sync)>,
    notice: fn(&registry::Retrying<'_>),
) -> Result<Digest, Failure> {
    let index = match target {
        TagTarget::Image(id) => {
            let manifest = store
                .image(&id)
                .context("reading the image record")?
                .ok_or_else(|| anyhow::anyhow!("image {id} is not in the store"))?
                .manifest;
            return push_manifest(store, &manifest, dest, opts, say, notice);
        }
        TagTarget::Index(i) => i,
    };
    pushing(store, dest, opts, say, notice, |client, mounts, tell| {
        let on = |e: registry::push::Event<'_>| tell(e.line());
        // docker's line for each manifest, named by its platform.
        let done = |platform: &str, p: &registry::push::Pushed| {
            tell(format!("{platform}: digest: {} size: {}", p.digest, p.size));
        };
        let pushed = registry::push::push_index(store, client, &index, dest, mounts, &on, &done)?;
        Ok((pushed.index.digest, pushed.index.size, pushed.index.digest))
    })
}

/// What both pushes share: docker's repository line first, the client
/// with its retry notices, the blobs other repositories can lend, and the
/// tag's `digest: … size: …` line last. `push` returns that digest and
/// size, and the caller's result.
fn pushing<T>(
    store: &crate::store::Store,
    dest: &Reference,
    opts: &Options,
    say: Option<&(dyn Fn(String) + Sync)>,
    notice: fn(&registry::Retrying<'_>),
    push: impl FnOnce(
        &Client,
        &std::collections::HashMap<Digest, String>,
        &(dyn Fn(String) + Sync),
    ) -> Result<(Digest, usize, T), registry::Error>,
) -> Result<T, Failure> {
    let tell = |line: String| {
        if let Some(s) = say {
            s(line);
        }
    };
    tell(format!("The push refers to repository [{}]", dest.name()));
    let client = Client::new(dest.domain(), opts).with_notices(notice);
    let mounts = registry::push::mount_sources(store, dest);
    let (digest, size, result) =
        push(&client, &mounts, &tell).with_context(|| format!("pushing to {}", dest.familiar()))?;
    tell(format!(
        "{}: digest: {digest} size: {size}",
        dest.tag().unwrap_or("latest"),
    ));
    Ok(result)
}

/// Pushes the manifest `manifest` (an image's, or a build's output with
/// its annotations) as `dest`, telling `say` docker's lines (the
/// repository, each layer, the digest) and `notice` each retry; `push` and
/// `build --push` share it.
///
/// # Errors
/// Registry, store or file failures.
pub fn push_manifest(
    store: &crate::store::Store,
    manifest: &Digest,
    dest: &Reference,
    opts: &Options,
    say: Option<&(dyn Fn(String) + Sync)>,
    notice: fn(&registry::Retrying<'_>),
) -> Result<Digest, Failure> {
    pushing(store, dest, opts, say, notice, |client, mounts, tell| {
        let on = |e: registry::push::Event<'_>| tell(e.line());
        let pushed =
            registry::push::push_manifest_blob(store, client, manifest, dest, mounts, &on)?;
        Ok((pushed.digest, pushed.size, pushed.digest))
    })
}

/// Checks credentials against the registry and stores them.
pub fn login(env: &Env, a: &LoginArgs) -> Result<(), Failure> {
    let password = match (&a.password, a.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "give the password with --password-stdin (or -p)"
            )));
        }
    };
    let creds = auth::Credentials {
        username: a.username.clone(),
        password,
    };
    let client = Client::new(
        &a.server,
        &Options {
            insecure: a.insecure_registry.clone(),
            docker_config: env.docker_config(),
            ..Options::default()
        },
    )
    .with_credentials(creds.clone());
    client
        .check_login()
        .with_context(|| format!("logging in to {}", a.server))?;
    let path = docker_config(env)
        .and_then(|config| auth::store(&config, &a.server, &creds))
        .with_context(|| format!("saving the credentials for {}", a.server))?;
    out(&format!(
        "Login Succeeded (credentials saved in {})\n",
        path.display()
    ))
}

/// Removes stored credentials.
pub fn logout(env: &Env, a: &LogoutArgs) -> Result<(), Failure> {
    let found = docker_config(env)
        .and_then(|config| auth::remove(&config, &a.server))
        .with_context(|| format!("removing the credentials for {}", a.server))?;
    if found {
        out(&format!("Removing login credentials for {}\n", a.server))
    } else {
        out(&format!("Not logged in to {}\n", a.server))
    }
}

/// The docker config file `login` and `logout` edit.
fn docker_config(env: &Env) -> std::io::Result<std::path::PathBuf> {
    env.docker_config()
        .ok_or_else(|| std::io::Error::other("HOME is not set"))
}
