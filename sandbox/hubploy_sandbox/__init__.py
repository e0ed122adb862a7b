"""The local sandbox platform (`hubploy sandbox ...`): a real Kubernetes API, helm 3/4, an
authenticated registry, buildah, sops + age, and a pod-readiness agent running real JupyterHubs.

Modules: paths (where things live), install, lifecycle (up/down/status), env (``sandbox_env()``),
components/k8s/registry/images/tools (the parts), procs/spawn (detached processes by PID file),
agent/kubelet/hubs/hub_config (the agent). No Prefect imports here.
"""
