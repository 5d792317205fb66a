//! Seccomp profiles written from what containers really called, fed to their real consumers:
//! Docker (and runc) load each profile and run the workload it was made from with the advised
//! capabilities; one syscall more is refused with EPERM, and `explain` says capwatch's profile
//! refused it. A syscall Docker's default opens only with a capability keeps that capability in
//! the advice; an image's merged profile runs every container of the image; the Kubernetes form
//! validates. The advice and corpus suites prove every other workload's profile. In CI these
//! must run.

use std::{fs, path::Path, process::Command};

use capwatch_tests::{capwatch, container_name, docker_available, tempdir, tool_available, wait_stored, DockerEnv};
use serde_json::Value;

/// `capwatch report ARGS --format FORMAT` on the store in `state`: what it printed.
fn report(state: &Path, args: &[&str], format: &str) -> String {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend(["--format", format, "--state-dir", state.to_str().unwrap()]);
    let (code, out, stderr) = capwatch(&all);
    assert_eq!(code, Some(0), "capwatch {all:?}: {stderr}");
    out
}

/// The report's seccomp profile written beside the store: the `--security-opt` that loads it.
fn profile_option(state: &Path, args: &[&str], label: &str) -> String {
    let profile = report(state, args, "seccomp");
    let parsed: Value = serde_json::from_str(&profile).unwrap_or_else(|e| panic!("{e}: {profile}"));
    assert_eq!(parsed["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
    let file = state.join(format!("{label}.seccomp.json"));
    fs::write(&file, &profile).expect("write the profile");
    format!("seccomp={}", file.display())
}

/// The `--cap-drop ALL --cap-add …` flags of the report.
fn cap_flags(state: &Path, args: &[&str]) -> Vec<String> {
    report(state, args, "docker").split_whitespace().map(String::from).collect()
}

/// Runs `command` with `options` and returns (exit code, its output).
fn run(env: &DockerEnv, options: &[&str], command: &[&str]) -> (i32, String, String) {
    let name = container_name("confined");
    let mut all = vec!["--name", name.as_str()];
    all.extend_from_slice(options);
    let id = env.start(&all, command);
    let code = env.wait(&id);
    let logs = env.try_docker(&["logs", &id]);
    (code, name, format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr)))
}

/// Observes `command` under Docker's defaults (and `options`) with a daemon writing `state`.
fn observed(env: &DockerEnv, state: &Path, label: &str, options: &[&str], command: &[&str]) -> String {
    let name = container_name(label);
    let mut all = vec!["--name", name.as_str()];
    all.extend_from_slice(options);
    let id = env.start(&all, command);
    assert_eq!(env.wait(&id), 0, "{label} should work with Docker's defaults");
    wait_stored(state, &name);
    name
}

#[test]
fn a_profile_runs_its_workload_and_refuses_one_syscall_more_which_explain_names() {
    let Some(env) = docker_available("a_profile_runs_its_workload_and_refuses_one_syscall_more_which_explain_names")
    else {
        return;
    };
    let state = tempdir("seccomp-refuses");
    let daemon = env.daemon(&state);
    let script = "touch /tmp/f && chown 1000:1000 /tmp/f";
    let name = observed(&env, &state, "seccomp-chown", &[], &["sh", "-c", script]);
    let profile = profile_option(&state, &[&name], "chown");
    let flags = cap_flags(&state, &[&name]);
    assert_eq!(flags, ["--cap-drop", "ALL", "--cap-add", "CHOWN"]);
    let mut options = vec!["--security-opt", profile.as_str()];
    options.extend(flags.iter().map(String::as_str));

    let (code, _, logs) = run(&env, &options, &["sh", "-c", script]);
    assert_eq!(code, 0, "the workload under its profile: {logs}");
    // mkdir is one syscall the workload never made.
    let (code, refused, logs) = run(&env, &options, &["sh", "-c", &format!("{script} && mkdir /tmp/d")]);
    assert_ne!(code, 0, "mkdir should be refused: {logs}");
    assert!(logs.contains("Operation not permitted"), "{logs}");
    wait_stored(&state, &refused);
    let (code, out, stderr) =
        capwatch(&["explain", &refused, "--format", "json", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let explanations: Value = serde_json::from_str(&out).expect("explain JSON");
    let mkdir = explanations.as_array().unwrap().iter().find(|e| e["syscall"] == "mkdir").expect("mkdir explained");
    assert_eq!(mkdir["errno"], "EPERM", "{mkdir:#}");
    assert_eq!(mkdir["cause"]["kind"], "seccomp", "{mkdir:#}");
    assert!(mkdir["text"].as_str().unwrap().contains("capwatch's least-privilege profile refused mkdir"), "{mkdir:#}");
    assert!(mkdir["fix"].as_str().unwrap().contains("--format seccomp"), "{mkdir:#}");
    daemon.stop(libc::SIGTERM);
}

/// Docker's default profile allows unshare only with CAP_SYS_ADMIN; busybox's `unshare true`
/// calls unshare(0), which the kernel itself checks nothing for. The capability is needed all
/// the same: without it, Docker's profile refuses the call.
#[test]
fn a_syscall_dockers_profile_opens_only_with_a_capability_keeps_it_in_both_answers() {
    let Some(env) = docker_available("a_syscall_dockers_profile_opens_only_with_a_capability_keeps_it_in_both_answers")
    else {
        return;
    };
    let state = tempdir("seccomp-coupled");
    let daemon = env.daemon(&state);
    let name = observed(&env, &state, "seccomp-unshare", &["--cap-add", "SYS_ADMIN"], &["unshare", "true"]);
    let flags = cap_flags(&state, &[&name]);
    assert_eq!(flags, ["--cap-drop", "ALL", "--cap-add", "SYS_ADMIN"]);
    let json: Value = serde_json::from_str(&report(&state, &[&name], "json")).unwrap();
    assert!(json["syscalls"]["allowed"].as_array().unwrap().iter().any(|s| s == "unshare"), "{json:#}");
    assert!(json["syscalls"]["left_out"].as_array().unwrap().is_empty(), "{json:#}");
    let profile = profile_option(&state, &[&name], "unshare");
    let (code, _, logs) =
        run(&env, &["--security-opt", &profile, "--cap-drop", "ALL", "--cap-add", "SYS_ADMIN"], &["unshare", "true"]);
    assert_eq!(code, 0, "{logs}");
    // Without the capability Docker's own default refuses it, and so does the profile.
    let (code, _, logs) = run(&env, &["--cap-drop", "ALL"], &["unshare", "true"]);
    assert_ne!(code, 0, "{logs}");
    daemon.stop(libc::SIGTERM);
}

#[test]
fn an_images_merged_profile_and_capabilities_run_every_container_of_the_image() {
    let Some(env) = docker_available("an_images_merged_profile_and_capabilities_run_every_container_of_the_image")
    else {
        return;
    };
    let state = tempdir("seccomp-image");
    let daemon = env.daemon(&state);
    // An image of its own: the daemon sees every container on the engine, other tests' too.
    let tag = format!("cw-image-{}", std::process::id());
    env.docker(&["tag", &env.image, &tag]);
    let workloads: [&[&str]; 2] =
        [&["sh", "-c", "touch /tmp/f && chown 1000:1000 /tmp/f"], &["mknod", "/tmp/null", "c", "1", "3"]];
    for (i, command) in workloads.iter().enumerate() {
        let name = container_name(&format!("seccomp-image-{i}"));
        let mut args = vec!["run", "--detach", "--network", "none", "--name", &name, &tag];
        args.extend_from_slice(command);
        let id = env.docker(&args);
        assert_eq!(env.wait(&id), 0, "{command:?} should work with Docker's defaults");
        wait_stored(&state, &name);
    }
    let image = ["--image", tag.as_str()];
    let json: Value = serde_json::from_str(&report(&state, &image, "json")).unwrap();
    assert_eq!(json["merged"]["containers"].as_array().unwrap().len(), 2, "{json:#}");
    let flags = cap_flags(&state, &image);
    assert_eq!(flags, ["--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "MKNOD"]);
    let profile = profile_option(&state, &image, "image");
    let mut options = vec!["--security-opt", profile.as_str()];
    options.extend(flags.iter().map(String::as_str));
    for command in workloads {
        let (code, _, logs) = run(&env, &options, command);
        assert_eq!(code, 0, "{command:?} under the image's profile: {logs}");
    }
    daemon.stop(libc::SIGTERM);
}

/// `--format seccomp-k8s`: its securityContext, in a Pod, validates against Kubernetes' schemas,
/// and its SeccompProfile's spec is a profile runc loads and runs the workload with.
#[test]
fn the_kubernetes_form_validates_and_its_profile_runs_the_workload() {
    let test = "the_kubernetes_form_validates_and_its_profile_runs_the_workload";
    let Some(env) = docker_available(test) else { return };
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin");
    let validator = match tools.join("kubernetes-validate") {
        local if local.is_file() => Some(local),
        _ => tool_available(test, "kubernetes-validate"),
    };
    let Some(validator) = validator else { return };
    let state = tempdir("seccomp-k8s");
    let daemon = env.daemon(&state);
    let name = observed(&env, &state, "seccomp-k8s", &[], &["sh", "-c", "touch /tmp/f && chown 1000:1000 /tmp/f"]);
    let yaml = report(&state, &[&name], "seccomp-k8s");
    let (object, stanza) = yaml.split_once("\n---\n").expect("two documents");
    assert!(object.contains("kind: SeccompProfile") && stanza.contains("type: Localhost"), "{yaml}");

    // The stanza, in a Pod's container, with the namespace it names filled in.
    let context: String = stanza
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("      {}\n", l.replace("NAMESPACE", "default")))
        .collect();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: confined\nspec:\n  containers:\n    - name: app\n      image: busybox\n{context}"
    );
    let pod_file = state.join("pod.yaml");
    fs::write(&pod_file, pod).unwrap();
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .arg(&pod_file)
        .output()
        .expect("kubernetes-validate");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The object's spec is an OCI profile: read with the validator's own YAML library.
    let python = tools.join("python3");
    let python = if python.is_file() { python.into_os_string() } else { "python3".into() };
    let convert = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())['spec']))";
    let mut child = Command::new(python)
        .args(["-c", convert])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), object.as_bytes()).unwrap();
    let spec = child.wait_with_output().expect("python3");
    assert!(spec.status.success(), "the SeccompProfile is not YAML: {object}");
    let file = state.join("spec.json");
    fs::write(&file, &spec.stdout).unwrap();
    let profile = format!("seccomp={}", file.display());
    let (code, _, logs) = run(
        &env,
        &["--security-opt", &profile, "--cap-drop", "ALL", "--cap-add", "CHOWN"],
        &["sh", "-c", "touch /tmp/f && chown 1000:1000 /tmp/f"],
    );
    assert_eq!(code, 0, "{logs}");
    daemon.stop(libc::SIGTERM);
}
