//! What a person reads: `--help`, the README's walk-through run as written, and answers that
//! fit a 100-column terminal, coloured only where asked, saying what to do. Each is compared
//! with a snapshot in tests/snapshots (`CAPWATCH_BLESS=1` rewrites them; mask what varies with
//! `[..]`). The walk-through and the containers need Docker; in CI they must run.

use std::{path::Path, time::Duration};

use capwatch_tests::{
    assert_snapshot, capwatch_at, container_name, docker_available, matches_snapshot, tempdir, wait_stored,
};

const COLUMNS: u16 = 100;

#[test]
fn the_help_reads_as_its_snapshots() {
    let commands: &[&[&str]] = &[
        &[],
        &["report"],
        &["explain"],
        &["whatif"],
        &["verify"],
        &["caps"],
        &["caps", "decode"],
        &["ps"],
        &["run"],
        &["daemon"],
        &["trace"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let (code, out, err) = capwatch_at(COLUMNS, &[], &args);
        assert_eq!(code, Some(0), "{err}");
        let name = std::iter::once("help").chain(command.iter().copied()).collect::<Vec<_>>().join("-");
        assert_snapshot(&name, &out);
    }
}

#[test]
fn caps_decode_names_what_is_set_and_what_is_not_beside_dockers_default() {
    // Seed 001's mask.
    let (code, out, err) = capwatch_at(COLUMNS, &[], &["caps", "decode", "0000001dbdbeffff"]);
    assert_eq!(code, Some(0), "{err}");
    assert_snapshot("caps-decode", &out);
    fits(&out);
}

/// Every line of `text` fits the terminal.
fn fits(text: &str) {
    for line in text.lines() {
        assert!(line.chars().count() <= COLUMNS as usize, "wider than {COLUMNS} columns:\n{line}\nin\n{text}");
    }
}

/// The README's walk-through, from its `<!-- walk-through -->` block: each `$ docker …` runs
/// against the tests' engine (its image tagged `busybox`), each `$ capwatch …` against the
/// daemon this test starts in place of the block's first command; each output must read as the
/// README shows it.
#[test]
fn the_readmes_walk_through_runs_as_written() {
    let Some(env) = docker_available("the_readmes_walk_through_runs_as_written") else { return };
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let block = readme
        .split("<!-- walk-through -->")
        .nth(1)
        .and_then(|rest| rest.split("```console\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("README.md has a walk-through block");
    let steps: Vec<(&str, String)> = block
        .split("\n$ ")
        .map(|step| {
            let step = step.strip_prefix("$ ").unwrap_or(step);
            let (command, output) = step.split_once('\n').unwrap_or((step, ""));
            (command, output.to_string())
        })
        .collect();
    assert!(steps[0].0.contains("capwatch daemon") || steps[0].0.contains("./x run"), "{steps:?}");

    env.docker(&["tag", &env.image, "busybox"]);
    let state = tempdir("walk-through");
    let _daemon = env.daemon(&state);
    // The walk-through's containers are named as it names them: none may be left from before.
    let names: Vec<&str> =
        steps.iter().filter_map(|(c, _)| c.split_whitespace().skip_while(|w| *w != "--name").nth(1)).collect();
    for name in &names {
        let _ = env.try_docker(&["rm", "--force", name]);
    }
    for (command, expected) in &steps[1..] {
        let words: Vec<&str> = command.split('#').next().unwrap().split_whitespace().collect();
        let output = match words[0] {
            "docker" => {
                let out = env.try_docker(&words[1..]);
                if let Some(name) = words.iter().skip_while(|w| **w != "--name").nth(1) {
                    wait_stored(&state, name);
                }
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
            }
            "capwatch" => {
                let state_dir = state.to_str().unwrap();
                let (_, out, err) = capwatch_at(COLUMNS, &[("CAPWATCH_STATE_DIR", state_dir)], &words[1..]);
                fits(&out);
                out + &err
            }
            other => panic!("the walk-through runs docker and capwatch only, not {other}"),
        };
        eprintln!("$ {command}\n{output}");
        assert!(
            matches_snapshot(expected, &output),
            "`{command}` no longer prints what README.md shows:\n--- README\n{expected}\n--- printed\n{output}"
        );
    }
    for name in names {
        let _ = env.try_docker(&["rm", "--force", name]);
    }
}

/// The answers of the issue's points on real containers: the report at 100 columns, coloured
/// only where asked; `explain` with the application's failures first and a fix for each; a
/// container whose runtime failed to start it; a running container's live sets.
#[test]
fn answers_fit_the_terminal_and_say_what_to_do() {
    let Some(env) = docker_available("answers_fit_the_terminal_and_say_what_to_do") else { return };
    let state = tempdir("answers");
    let state_dir = state.to_str().unwrap().to_string();
    let daemon = env.daemon(&state);
    let at = |env: &[(&str, &str)], args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--state-dir", &state_dir]);
        let (code, out, err) = capwatch_at(COLUMNS, env, &args);
        assert_eq!(code, Some(0), "capwatch {args:?}: {err}");
        out
    };

    // Seccomp refuses clock_settime unless CAP_SYS_TIME is added; a user is refused a file.
    let clock = container_name("clock");
    let id = env.start(
        &["--name", &clock],
        &[
            "sh",
            "-c",
            "date -s 2001-01-01; touch /tmp/key; chmod 600 /tmp/key; su nobody -s /bin/sh -c 'cat /tmp/key'; exit 0",
        ],
    );
    env.wait(&id);
    wait_stored(&state, &clock);
    let report = at(&[], &["report", &clock]);
    fits(&report);
    assert!(!report.contains('\x1b'), "no colour into a pipe:\n{report}");
    assert_snapshot("report", &report.replace(&clock, "NAME"));
    let verbose = at(&[], &["report", &clock, "-v"]);
    fits(&verbose);
    assert!(verbose.lines().count() > report.lines().count(), "-v adds each capability's syscalls:\n{verbose}");
    let coloured = at(&[("CLICOLOR_FORCE", "1")], &["report", &clock]);
    assert!(coloured.contains("\x1b["), "CLICOLOR_FORCE colours:\n{coloured}");
    let plain = at(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &["report", &clock]);
    assert!(!plain.contains('\x1b'), "NO_COLOR wins:\n{plain}");

    let explained = at(&[], &["explain", &clock]);
    fits(&explained);
    assert_snapshot("explain", &explained.replace(&clock, "NAME"));
    let all = at(&[], &["explain", &clock, "--all"]);
    fits(&all);

    // The runtime fails to start it: Docker created it, named it, and never started it.
    let broken = container_name("broken");
    let out = env.try_docker(&["run", "--name", &broken, "--network", "none", &env.image, "/nonexistent"]);
    assert!(!out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ps = loop {
        let ps = at(&[], &["ps", "--all"]);
        // Columns wrap at 100: the state's first words are on the name's line.
        if ps.lines().any(|l| l.contains(&broken) && l.contains("created, failed")) {
            break ps;
        }
        assert!(std::time::Instant::now() < deadline, "{broken} never shown as failed to start:\n{ps}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(!at(&[], &["ps"]).contains(&broken), "not running:\n{ps}");

    // A running container's live sets, read from /proc.
    let sleeper = container_name("sleeper");
    env.start(&["--name", &sleeper, "--cap-add", "SYS_ADMIN", "--cap-drop", "MKNOD"], &["sleep", "60"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let live = loop {
        let (code, out, _) =
            capwatch_at(COLUMNS, &[], &["caps", "decode", "--container", &sleeper, "--state-dir", &state_dir]);
        if code == Some(0) {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "{sleeper} never decoded");
        std::thread::sleep(Duration::from_millis(250));
    };
    fits(&live);
    assert!(live.contains("= Docker's default + SYS_ADMIN − MKNOD"), "{live}");
    env.docker(&["rm", "--force", &sleeper]);
    let (code, _, err) = capwatch_at(COLUMNS, &[], &["caps", "decode", "--pid", "999999999"]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    drop(daemon);
}
