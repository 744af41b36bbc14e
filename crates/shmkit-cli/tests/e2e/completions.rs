//! `completions` and the help of every verb.

use std::process::Command;

use crate::util::{TempDir, run, shmkit};

/// The verbs these tests know of; `shmkit --help` may list more, and every
/// verb it lists is checked.
const VERBS: [&str; 11] =
    ["create", "write", "read", "info", "rm", "limits", "ls", "gc", "send", "recv", "completions"];

/// The verbs `shmkit --help` lists (without `help`), in its order.
fn listed_verbs() -> Vec<String> {
    let help = shmkit(&["--help"]).ok().out();
    // The "Commands:" section: a verb at the start of each line indented by
    // two spaces (wrapped descriptions are indented further).
    let verbs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&v| v != "help")
        .map(str::to_string)
        .collect();
    for verb in VERBS {
        assert!(verbs.iter().any(|v| v == verb), "`shmkit --help` does not list {verb}:\n{help}");
    }
    verbs
}

#[test]
fn every_verb_has_examples_in_its_help() {
    for verb in listed_verbs() {
        for args in [vec![verb.as_str(), "--help"], vec!["help", verb.as_str()]] {
            let text = shmkit(&args).ok().out();
            let examples = text.split("Examples:").nth(1);
            assert!(examples.is_some(), "`shmkit {}` has no examples:\n{text}", args.join(" "));
            let uses = format!("shmkit {verb}");
            assert!(examples.unwrap_or_default().contains(&uses), "the examples of {verb} use it:\n{text}");
        }
    }
}

#[test]
fn completions_know_every_verb() {
    let verbs = listed_verbs();
    let dir = TempDir::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = shmkit(&["completions", shell]).ok().out();
        for verb in &verbs {
            assert!(script.contains(verb.as_str()), "the {shell} completions do not mention {verb}");
        }
    }
    let bash = shmkit(&["completions", "bash"]).ok().out();
    assert!(bash.contains("complete -F _shmkit"), "a bash completion function for shmkit:\n{bash}");
    // The flags of the verbs are there too.
    for flag in ["--stale", "--dry-run", "--timeout", "--force", "--kind"] {
        assert!(bash.contains(flag), "the bash completions do not know {flag}");
    }
    // And bash parses it.
    let path = dir.path().join("shmkit.bash");
    std::fs::write(&path, &bash).expect("write the script");
    let out = run(Command::new("bash").arg("-n").arg(&path), None);
    assert!(out.status.success(), "bash -n rejects the completion script: {}", out.stderr);

    shmkit(&["completions", "tcsh-or-so"]).fails(2);
    shmkit(&["completions"]).fails(2);
}
