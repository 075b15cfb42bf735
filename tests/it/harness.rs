//! The integration binary's test runner (libtest-mimic): libtest's output,
//! filters and flags, plus skips that are reported. A test registers with
//! `it_test!(name)` right above its `fn`; one that needs what a machine may
//! truly lack (a kernel that grants user namespaces to ordinary users, say)
//! registers with `it_test!(name, needs = check)`, where `check` returns the
//! reason it cannot run, and is then counted as ignored, with the reason in
//! its line and in a closing summary. What `.ci/run` installs is never a
//! reason: a missing tool is a failure (see `util::tool`).

use std::sync::Mutex;

use libtest_mimic::{Arguments, Failed, Trial};

/// One registered test.
pub struct Test {
    /// `module_path!()` of the file it is in.
    pub module: &'static str,
    /// Its function's name.
    pub name: &'static str,
    /// The test.
    pub run: fn(),
    /// `Some(reason)` when this machine cannot run it.
    pub needs: Option<fn() -> Option<String>>,
}

inventory::collect!(Test);

/// Registers the `fn` that follows as a test.
#[macro_export]
macro_rules! it_test {
    ($name:ident) => {
        inventory::submit!($crate::harness::Test {
            module: module_path!(),
            name: stringify!($name),
            run: $name,
            needs: None,
        });
    };
    ($name:ident, needs = $needs:path) => {
        inventory::submit!($crate::harness::Test {
            module: module_path!(),
            name: stringify!($name),
            run: $name,
            needs: Some($needs),
        });
    };
}

/// Runs every registered test (sorted by name, as libtest does) and exits
/// with libtest's status.
pub fn main() {
    let args = Arguments::from_args();
    let skipped: &'static Mutex<Vec<String>> = Box::leak(Box::default());
    let mut tests: Vec<&Test> = inventory::iter::<Test>.into_iter().collect();
    tests.sort_by_key(|t| (t.module, t.name));
    let trials = tests
        .into_iter()
        .map(|t| {
            let module = t.module.split_once("::").map_or("", |(_, m)| m);
            let name = if module.is_empty() {
                t.name.to_string()
            } else {
                format!("{module}::{}", t.name)
            };
            let reason = t.needs.and_then(|check| check());
            let run = t.run;
            let trial = Trial::test(name.clone(), move || {
                std::panic::catch_unwind(run).map_err(|payload| {
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the test panicked".into());
                    Failed::from(msg)
                })
            });
            match reason {
                Some(r) => {
                    if let Ok(mut s) = skipped.lock() {
                        s.push(format!("{name}: {r}"));
                    }
                    trial
                        .with_ignored_flag(true)
                        .with_kind(format!("skipped: {r}"))
                }
                None => trial,
            }
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Ok(s) = skipped.lock()
        && !s.is_empty()
        && !args.list
    {
        println!("{} test(s) skipped on this machine:", s.len());
        for line in s.iter() {
            println!("  {line}");
        }
    }
    conclusion.exit();
}
