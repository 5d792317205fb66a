//! A container recreated from Docker's record of another, with only its capabilities changed:
//! the same image, entrypoint, command, environment, user, working directory, mounts, network
//! mode, sysctls, security options and devices, under a new name and a label saying it is
//! capwatch's. The original is only inspected, never touched. `capwatch verify` runs these.

use std::{collections::HashMap, time::Duration};

use bollard::{
    exec::{CreateExecOptions, StartExecResults},
    models::{ContainerConfig, ContainerCreateBody, HostConfig},
    query_parameters::{CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions},
    Docker, API_DEFAULT_VERSION,
};
use futures_util::StreamExt;

use crate::error::Error;

/// The label on every container `capwatch verify` makes: the id of the container it copies.
pub const LABEL: &str = "io.capwatch.verify.of";
/// Which run of `capwatch verify` made it, so that the run removes all it made, even a copy
/// interrupted between its creation and its start.
pub const RUN_LABEL: &str = "io.capwatch.verify.run";

/// How an original container ran, as Docker recorded it.
pub struct Original {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    pub host: HostConfig,
    /// Running now: a service. Otherwise it ran to completion with `exit_code`.
    pub running: bool,
    pub exit_code: Option<i64>,
}

/// A Docker engine, for recreating containers.
pub struct Engine {
    docker: Docker,
    socket: String,
}

impl Engine {
    pub async fn connect(socket: &str) -> Result<Self, Error> {
        let unavailable = |e: bollard::errors::Error| Error::Docker {
            doing: format!("connecting to {socket}"),
            reason: e.to_string(),
        };
        let docker = Docker::connect_with_unix(socket, 30, API_DEFAULT_VERSION)
            .map_err(unavailable)?
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        Ok(Self { docker, socket: socket.to_string() })
    }

    /// The original's configuration, and that its image is still there.
    pub async fn original(&self, id: &str, name: &str) -> Result<Original, Error> {
        let details = self.docker.inspect_container(id, None).await.map_err(|e| Error::Recreate {
            container: name.to_string(),
            reason: format!("Docker at {} no longer knows it ({e})", self.socket),
        })?;
        let config = details.config.unwrap_or_default();
        let image = config.image.clone().unwrap_or_default();
        if let Err(e) = self.docker.inspect_image(&image).await {
            return Err(Error::Recreate {
                container: name.to_string(),
                reason: format!("its image {image} is gone ({e}): pull or load it again"),
            });
        }
        let state = details.state.unwrap_or_default();
        Ok(Original {
            id: details.id.unwrap_or_else(|| id.to_string()),
            name: name.to_string(),
            config,
            host: details.host_config.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
        })
    }

    /// Creates and starts a copy of `original` named `name` holding exactly `caps`
    /// (`--cap-drop ALL --cap-add …`); returns its id. A copy created but not started is
    /// removed here.
    pub async fn start_copy(
        &self,
        original: &Original,
        run: &str,
        name: &str,
        caps: &[String],
    ) -> Result<String, Error> {
        let body = copy(original, run, caps);
        let options = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| Error::Recreate {
            container: original.name.clone(),
            reason: format!("Docker refused its configuration: {}", message(&e)),
        })?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(Error::Recreate {
                container: original.name.clone(),
                reason: format!("Docker could not start the copy: {}", message(&e)),
            });
        }
        Ok(created.id)
    }

    /// Waits up to `timeout` for the container to exit; its exit code, or None if it still runs.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<i64>, Error> {
        let mut waits = self.docker.wait_container(id, None);
        match tokio::time::timeout(timeout, waits.next()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(exit))) => Ok(Some(exit.status_code)),
            // bollard reports a non-zero exit as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(Some(code)),
            Ok(Some(Err(e))) => Err(self.failed("waiting for a verification container", &e)),
            Ok(None) => Ok(self.exit_code(id).await),
        }
    }

    /// The container's exit code once it has exited.
    async fn exit_code(&self, id: &str) -> Option<i64> {
        let state = self.docker.inspect_container(id, None).await.ok()?.state?;
        match state.running {
            Some(false) => state.exit_code,
            _ => None,
        }
    }

    pub async fn running(&self, id: &str) -> bool {
        let state = self.docker.inspect_container(id, None).await.ok().and_then(|d| d.state);
        state.and_then(|s| s.running).unwrap_or(false)
    }

    /// Runs `sh -c CHECK` inside the container (as `docker exec`): its exit code and output.
    pub async fn exec(&self, id: &str, check: &str) -> Result<(i64, String), Error> {
        let options = CreateExecOptions {
            cmd: Some(vec!["sh".to_string(), "-c".to_string(), check.to_string()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, options).await.map_err(|e| self.failed("starting --check", &e))?;
        let mut output = String::new();
        if let StartExecResults::Attached { output: mut stream, .. } =
            self.docker.start_exec(&exec.id, None).await.map_err(|e| self.failed("starting --check", &e))?
        {
            while let Some(Ok(chunk)) = stream.next().await {
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        let inspected =
            self.docker.inspect_exec(&exec.id).await.map_err(|e| self.failed("reading --check's exit", &e))?;
        Ok((inspected.exit_code.unwrap_or(-1), output.trim().to_string()))
    }

    /// Stops the container at once (SIGKILL); nothing if it already exited.
    pub async fn kill(&self, id: &str) {
        let options = KillContainerOptions { signal: "KILL".to_string() };
        let _ = self.docker.kill_container(id, Some(options)).await;
    }

    /// Removes the container, running or not; a container already gone is no error.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        let _ = self.docker.remove_container(id, Some(options)).await;
    }

    /// Removes every container the run `run` made.
    pub async fn remove_run(&self, run: &str) {
        let filters = HashMap::from([("label".to_string(), vec![format!("{RUN_LABEL}={run}")])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        for summary in self.docker.list_containers(Some(options)).await.unwrap_or_default() {
            if let Some(id) = summary.id {
                self.remove(&id).await;
            }
        }
    }

    fn failed(&self, doing: &str, e: &bollard::errors::Error) -> Error {
        Error::Docker { doing: format!("{doing} (Docker at {})", self.socket), reason: message(e) }
    }
}

/// Docker's own words for a refusal: they name the setting it rejected.
fn message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// The creation request: the original's configuration with only its capabilities changed. What
/// would clash with the original, which may still run, is left out: its host port bindings, the
/// host name Docker derived from its id, and Compose's labels (Compose would count the copy as
/// one of its project's containers).
fn copy(original: &Original, run: &str, caps: &[String]) -> ContainerCreateBody {
    let c = original.config.clone();
    let mut labels = c.labels.unwrap_or_default();
    labels.retain(|key, _| !key.starts_with("com.docker.compose."));
    labels.insert(LABEL.to_string(), original.id.clone());
    labels.insert(RUN_LABEL.to_string(), run.to_string());
    let derived_hostname = c.hostname.as_deref().is_some_and(|h| !h.is_empty() && original.id.starts_with(h));
    let host = HostConfig {
        cap_add: Some(caps.to_vec()),
        cap_drop: Some(vec!["ALL".to_string()]),
        privileged: Some(false),
        port_bindings: None,
        publish_all_ports: Some(false),
        auto_remove: Some(false),
        restart_policy: None,
        ..original.host.clone()
    };
    ContainerCreateBody {
        hostname: if derived_hostname { None } else { c.hostname },
        domainname: c.domainname,
        user: c.user,
        exposed_ports: c.exposed_ports,
        tty: c.tty,
        open_stdin: c.open_stdin,
        stdin_once: c.stdin_once,
        env: c.env,
        cmd: c.cmd,
        healthcheck: c.healthcheck,
        args_escaped: c.args_escaped,
        image: c.image,
        volumes: c.volumes,
        working_dir: c.working_dir,
        entrypoint: c.entrypoint,
        network_disabled: c.network_disabled,
        on_build: c.on_build,
        labels: Some(labels.into_iter().collect::<HashMap<_, _>>()),
        stop_signal: c.stop_signal,
        stop_timeout: c.stop_timeout,
        shell: c.shell,
        host_config: Some(host),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{PortBinding, RestartPolicy};

    use super::*;

    #[test]
    fn a_copy_changes_only_its_capabilities_and_what_would_clash_with_the_original() {
        let id = format!("abcdef123456{}", "0".repeat(52));
        let labels = HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("com.docker.compose.project".to_string(), "shop".to_string()),
        ]);
        let ports = HashMap::from([("80/tcp".to_string(), Some(vec![PortBinding::default()]))]);
        let original = Original {
            id: id.clone(),
            name: "web".into(),
            config: ContainerConfig {
                hostname: Some("abcdef123456".into()),
                image: Some("nginx".into()),
                user: Some("101".into()),
                cmd: Some(vec!["nginx".into()]),
                labels: Some(labels),
                ..Default::default()
            },
            host: HostConfig {
                privileged: Some(true),
                cap_add: Some(vec!["SYS_ADMIN".into()]),
                network_mode: Some("none".into()),
                sysctls: Some(HashMap::from([("net.ipv4.ip_unprivileged_port_start".into(), "0".into())])),
                port_bindings: Some(ports),
                restart_policy: Some(RestartPolicy::default()),
                ..Default::default()
            },
            running: true,
            exit_code: None,
        };
        let body = copy(&original, "run-1", &["NET_RAW".to_string()]);
        let host = body.host_config.unwrap();
        assert_eq!(host.cap_add, Some(vec!["NET_RAW".to_string()]));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.sysctls, original.host.sysctls);
        assert_eq!((body.image.as_deref(), body.user.as_deref()), (Some("nginx"), Some("101")));
        assert_eq!(body.cmd, Some(vec!["nginx".to_string()]));
        assert_eq!(body.hostname, None);
        let labels = body.labels.unwrap();
        assert_eq!(labels.get(LABEL), Some(&id));
        assert_eq!(labels.get(RUN_LABEL).map(String::as_str), Some("run-1"));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert!(!labels.contains_key("com.docker.compose.project"));
    }
}
