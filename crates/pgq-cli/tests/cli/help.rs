//! `--help` on every command, and `pgq completions`.

use crate::util::{bare, run_fails, run_ok};

#[test]
fn every_command_has_help_with_examples() {
    for cmd in [
        vec![],
        vec!["install"],
        vec!["queue", "create"],
        vec!["queue", "drop"],
        vec!["queue", "list"],
        vec!["queue", "info"],
        vec!["queue", "config"],
        vec!["queue", "pause"],
        vec!["queue", "resume"],
        vec!["consumer", "register"],
        vec!["consumer", "unregister"],
        vec!["consumer", "list"],
        vec!["status"],
        vec!["send"],
        vec!["tail"],
        vec!["tick"],
        vec!["maint"],
        vec!["completions"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let mut c = bare();
        c.args(&args);
        let out = run_ok(c, &args);
        assert!(out.contains("Examples:"), "{args:?}: {out}");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut c = bare();
        c.args(["completions", shell]);
        let out = run_ok(c, &[shell]);
        assert!(out.contains("pgq") && out.contains("consumer"), "{shell}");
    }
    let mut c = bare();
    c.args(["completions", "powershell-ish"]);
    run_fails(c, &["completions"], 2);
    let mut c = bare();
    c.arg("no-such-command");
    run_fails(c, &["no-such-command"], 2);
}
