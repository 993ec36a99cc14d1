//! The command line as a shell user meets it: completions that a shell loads, and a man
//! page that `man` renders (issue 20).

use std::io::Write;
use std::process::{Command, Stdio};

fn elior(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elior"))
        .args(args)
        .output()
        .expect("failed to run elior")
}

/// What bash's completion function offers for the words typed so far.
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source /dev/stdin\nCOMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT={point}\n\
         _elior elior '{last}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        cword = words.len() - 1,
        point = line.len(),
        last = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let mut child = Command::new("bash")
        .args(["-c", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to run bash");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "bash failed on the completion script");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_their_flags() {
    let out = elior(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert_eq!(bash_completes(&script, &["elior", "dep"]), ["deploy"]);
    let flags = bash_completes(&script, &["elior", "deploy", "--dr"]);
    assert_eq!(flags, ["--dry-run"]);
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let out = elior(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["deploy", "backup", "restore", "doctor", "serve"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error_naming_the_choices() {
    let out = elior(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_page_renders_with_man() {
    let page = elior(&["man"]);
    assert!(page.status.success());
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man is not installed (Debian package man-db)");
    man.stdin.take().unwrap().write_all(&page.stdout).unwrap();
    let out = man.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("elior - Deploy"), "{text}");
    assert!(
        text.contains("elior-deploy(1)") && text.contains("elior-backup(1)"),
        "the page lists no subcommands:\n{text}"
    );
}

#[test]
fn man_into_a_closed_pipe_exits_0() {
    // `elior man | head -1`: the reader leaving early is not a failure.
    let mut child = Command::new(env!("CARGO_BIN_EXE_elior"))
        .arg("man")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
