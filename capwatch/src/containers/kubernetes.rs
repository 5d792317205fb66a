//! Kubernetes names for containers of pods: `namespace/pod/container`, from the annotations the
//! kubelet's CRI puts on each container's OCI config (containerd, CRI-O) or the labels it puts
//! on Docker containers. The cgroup path gives only the pod's uid and the container's id.

use std::{collections::HashMap, fs, path::Path};

use super::{Identity, Runtime};

/// Where each runtime keeps a running container's OCI config, below the host's root.
fn bundle_config(runtime: Runtime, id: &str) -> Option<String> {
    match runtime {
        Runtime::Containerd => Some(format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json")),
        Runtime::Crio => Some(format!("run/containers/storage/overlay-containers/{id}/userdata/config.json")),
        Runtime::Docker | Runtime::Podman | Runtime::Command | Runtime::Systemd => None,
    }
}

/// (namespace, pod, container) keys: containerd's CRI plugin, then the kubelet's own (CRI-O,
/// and labels on Docker containers).
const KEYS: [[&str; 3]; 2] = [
    ["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.container-name"],
    ["io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.container.name"],
];

/// `namespace/pod/container` for a container of a pod, where its runtime's config says so.
pub fn name(root: &Path, identity: &Identity) -> Option<String> {
    let config = root.join(bundle_config(identity.runtime, &identity.id)?);
    let config: serde_json::Value = serde_json::from_str(&fs::read_to_string(config).ok()?).ok()?;
    let annotations: HashMap<String, String> = serde_json::from_value(config.get("annotations")?.clone()).ok()?;
    from_labels(&annotations)
}

/// `namespace/pod/container` from a container's annotations or labels.
pub fn from_labels(labels: &HashMap<String, String>) -> Option<String> {
    KEYS.iter().find_map(|[namespace, pod, container]| {
        Some(format!("{}/{}/{}", labels.get(*namespace)?, labels.get(*pod)?, labels.get(*container)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1a7c9b2d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";

    fn identity(runtime: Runtime) -> Identity {
        Identity {
            runtime,
            id: ID.into(),
            pod_uid: Some("0d1b7f1e-5c3a-4b7e-9a5d-6e8f2c1b3a4d".into()),
            cgroup: String::new(),
        }
    }

    fn write_config(root: &Path, runtime: Runtime, annotations: serde_json::Value) {
        let path = root.join(bundle_config(runtime, ID).unwrap());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, serde_json::json!({ "ociVersion": "1.1.0", "annotations": annotations }).to_string()).unwrap();
    }

    #[test]
    fn names_containerd_and_cri_o_containers_from_their_bundles() {
        let root = std::env::temp_dir().join(format!("capwatch-k8s-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        write_config(
            &root,
            Runtime::Containerd,
            serde_json::json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-name": "web-7d9f8",
                "io.kubernetes.cri.container-name": "nginx"
            }),
        );
        assert_eq!(name(&root, &identity(Runtime::Containerd)).as_deref(), Some("shop/web-7d9f8/nginx"));
        write_config(
            &root,
            Runtime::Crio,
            serde_json::json!({
                "io.kubernetes.pod.namespace": "kube-system",
                "io.kubernetes.pod.name": "coredns-5d78c",
                "io.kubernetes.container.name": "coredns"
            }),
        );
        assert_eq!(name(&root, &identity(Runtime::Crio)).as_deref(), Some("kube-system/coredns-5d78c/coredns"));
        // No bundle, or a runtime without one: no name from here.
        assert_eq!(name(&root.join("nowhere"), &identity(Runtime::Containerd)), None);
        assert_eq!(name(&root, &identity(Runtime::Docker)), None);
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn names_docker_containers_of_pods_from_their_labels() {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.name", "api-0"),
            ("io.kubernetes.container.name", "api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(from_labels(&labels).as_deref(), Some("default/api-0/api"));
        assert_eq!(from_labels(&HashMap::new()), None);
    }
}
