"""hubploy's sandbox: a real local platform to test deployments on, beside the product (which never
imports it), as envtest is beside controller-runtime.

One or more Kubernetes clusters of a current release (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, built from Go modules), each with an agent in the kubelet's place that runs every pod's
command as a host process in the pod's own network and mount namespaces; an authenticated registry;
helm 3 and 4, buildah, sops and an age key.

Modules: versions (what runs, set in one place), paths, network (each cluster's addresses), builds and
install (`hubploy sandbox install`), image_envs (what stands in for container images), k8s, registry,
images, tools, components and lifecycle (`up`, `down`, `status`), env (``sandbox_env()``), procs and
spawn (detached processes by PID file), agent (the kubelet stand-in). No Prefect imports here.
"""
