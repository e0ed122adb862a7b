"""JupyterHub's configuration in the hub pod of hubploy's jupyterhub stand-in chart.

`jupyterhub --config /usr/local/etc/jupyterhub/jupyterhub_config.py` loads it. It turns the chart
values (read with z2jh.get_config from the mounted hub Secret) into traitlets config, in order:

1. the chart's wiring: KubeSpawner, the proxy in its own pod, the database, the hub's URLs;
2. JupyterHub settings from hub.*, KubeSpawner settings from singleuser.* and scheduling.*;
3. the idle culler, hub.services and hub.loadRoles;
4. the generated secrets (cookie secret, crypt keys) from the hub Secret;
5. hub.config, as {Class: {trait: value}};
6. the *.py files of jupyterhub_config.d/ (e.g. from hub.extraFiles), then every hub.extraConfig
   snippet, both in name order, so they can change anything set before.
"""

import copy
import glob
import importlib.metadata
import importlib.util
import os
import re
import sys

c = get_config()  # noqa: F821 -- given by traitlets while it loads this file

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, CONFIG_DIR)  # z2jh.py, and modules extraConfig may import, live beside this file

from z2jh import (  # noqa: E402
    get_config,
    get_name,
    get_name_env,
    get_secret_value,
    set_config_if_not_none,
)


def camel_case(snake: str) -> str:
    """concurrent_spawn_limit -> concurrentSpawnLimit: the chart value named after a trait."""
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), snake)


def chart_copy(key, default=None):
    """A chart value this file may change without changing what z2jh.get_config returns later."""
    return copy.deepcopy(get_config(key, default))


def kubespawner_major() -> int:
    try:
        return int(importlib.metadata.version("jupyterhub-kubespawner").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 7


# KubeSpawner before 7 (in Z2JH 3.x hub images) takes volumes and mounts as lists only and knows no
# {user_server} in name templates, which KubeSpawner 7 defines as {username}--{servername}.
LEGACY_KUBESPAWNER = kubespawner_major() < 7


def name_template(template):
    if LEGACY_KUBESPAWNER and template:
        return template.replace("{user_server}", "{username}--{servername}")
    return template


# --- 1. wiring ----------------------------------------------------------------------------------

# Tornado's curl client copes with the many concurrent proxy API calls of a busy hub; the image
# may lack pycurl, then the default client stays.
if importlib.util.find_spec("pycurl"):
    from tornado.httpclient import AsyncHTTPClient

    AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"

# The hub listens on all addresses of its pod; others reach it through its Service, whose port
# Kubernetes puts in <SERVICE>_SERVICE_PORT.
c.JupyterHub.hub_bind_url = "http://:8081"
c.JupyterHub.hub_connect_url = f"http://{get_name('hub')}:{get_name_env('hub', '_SERVICE_PORT')}"

# configurable-http-proxy runs in the proxy pod; the hub only configures its routes.
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = (
    f"http://{get_name('proxy-api')}:{get_name_env('proxy-api', '_SERVICE_PORT')}"
)
if os.environ.get("CONFIGPROXY_AUTH_TOKEN"):  # from the hub Secret, like the proxy pod's
    c.ConfigurableHTTPProxy.auth_token = os.environ["CONFIGPROXY_AUTH_TOKEN"]

# User servers keep running while the hub restarts (an upgrade, a config change).
c.JupyterHub.cleanup_servers = False
# How often the hub checks the proxy's routes and records user activity, in seconds.
c.JupyterHub.last_activity_interval = 60
# Show the spawn progress page at once instead of waiting for a slow spawn.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}

db_type = get_config("hub.db.type")
if db_type == "sqlite-pvc":
    # Relative to the working directory /srv/jupyterhub, where the chart mounts the hub-db-dir PVC.
    c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
elif db_type == "sqlite-memory":
    c.JupyterHub.db_url = "sqlite://"
else:
    set_config_if_not_none(c.JupyterHub, "db_url", "hub.db.url")
db_password = get_secret_value("hub.db.password", None)
if db_password is not None:
    password_variables = {"mysql": "MYSQL_PWD", "postgres": "PGPASSWORD"}
    if db_type in password_variables:
        os.environ[password_variables[db_type]] = db_password
    else:
        print(f"hub.db.password is ignored with hub.db.type {db_type}: put it in hub.db.url")


# --- 2. JupyterHub and KubeSpawner settings from the chart values -------------------------------

for trait in (
    "concurrent_spawn_limit",
    "active_server_limit",
    "base_url",
    "allow_named_servers",
    "named_server_limit_per_user",
    "authenticate_prometheus",
    "redirect_to_server",
    "shutdown_on_logout",
    "template_paths",
    "template_vars",
):
    set_config_if_not_none(c.JupyterHub, trait, "hub." + camel_case(trait))
set_config_if_not_none(c.Spawner, "consecutive_failure_limit", "hub.consecutiveFailureLimit")

# The labels of user pods and PVCs, like the chart's own objects but managed by KubeSpawner.
# app and release stay until selectors of older releases no longer need them.
app = get_config("nameOverride") or get_config("Chart.Name", "jupyterhub")
common_labels = {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "kubespawner"}
if get_config("Release.Name"):
    common_labels["release"] = common_labels["app.kubernetes.io/instance"] = get_config("Release.Name")
if get_config("Chart.Name") and get_config("Chart.Version"):
    chart = f"{get_config('Chart.Name')}-{get_config('Chart.Version').replace('+', '_')}"
    common_labels["chart"] = common_labels["helm.sh/chart"] = chart
c.KubeSpawner.common_labels = common_labels

# User pods go to the hub's namespace (POD_NAMESPACE comes from the pod's own metadata).
c.KubeSpawner.namespace = os.environ.get("POD_NAMESPACE", "default")

# KubeSpawner trait <- singleuser.<value>, where the value is not the trait's camelCase name.
SINGLEUSER_TRAITS = {
    "start_timeout": None,
    "image_pull_policy": "image.pullPolicy",
    "events_enabled": "events",
    "extra_labels": None,
    "extra_annotations": None,
    "uid": None,
    "fs_gid": None,
    "service_account": "serviceAccountName",
    "storage_extra_labels": "storage.extraLabels",
    "node_selector": None,
    "pod_affinity_required": "extraPodAffinity.required",
    "pod_affinity_preferred": "extraPodAffinity.preferred",
    "pod_anti_affinity_required": "extraPodAntiAffinity.required",
    "pod_anti_affinity_preferred": "extraPodAntiAffinity.preferred",
    "lifecycle_hooks": None,
    "extra_containers": None,
    "mem_limit": "memory.limit",
    "mem_guarantee": "memory.guarantee",
    "cpu_limit": "cpu.limit",
    "cpu_guarantee": "cpu.guarantee",
    "extra_resource_limits": "extraResource.limits",
    "extra_resource_guarantees": "extraResource.guarantees",
    "environment": "extraEnv",
    "profile_list": None,
    "extra_pod_config": None,
}
for trait, key in SINGLEUSER_TRAITS.items():
    set_config_if_not_none(c.KubeSpawner, trait, "singleuser." + (key or camel_case(trait)))
if get_config("singleuser.podNameTemplate"):
    c.KubeSpawner.pod_name_template = name_template(get_config("singleuser.podNameTemplate"))

image = get_config("singleuser.image.name")
if image:
    tag = get_config("singleuser.image.tag")
    c.KubeSpawner.image = f"{image}:{tag}" if tag else image

# None, False and True all mean something here, so the value is taken as it is.
c.KubeSpawner.allow_privilege_escalation = get_config("singleuser.allowPrivilegeEscalation")

# singleuser.cmd null means the image's own command; a missing key keeps KubeSpawner's default.
MISSING = object()
cmd = get_config("singleuser.cmd", MISSING)
if cmd is not MISSING:
    c.Spawner.cmd = cmd
set_config_if_not_none(c.Spawner, "default_url", "singleuser.defaultUrl")

# Registry credentials: the chart's own Secret, imagePullSecrets, singleuser.image.pullSecrets.
pull_secrets = []
if get_config("imagePullSecret.create") and get_config("imagePullSecret.automaticReferenceInjection"):
    pull_secrets.append(get_name("image-pull-secret"))
pull_secrets += chart_copy("imagePullSecrets", []) + chart_copy("singleuser.image.pullSecrets", [])
if pull_secrets:
    c.KubeSpawner.image_pull_secrets = pull_secrets

# Scheduling: the user-scheduler, pod priority, node purpose and tolerations.
if get_config("scheduling.userScheduler.enabled"):
    c.KubeSpawner.scheduler_name = get_name("user-scheduler")
if get_config("scheduling.podPriority.enabled"):
    c.KubeSpawner.priority_class_name = get_name("priority")

node_required = chart_copy("singleuser.extraNodeAffinity.required", [])
node_preferred = chart_copy("singleuser.extraNodeAffinity.preferred", [])
user_nodes = {
    "matchExpressions": [{"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]
}
node_purpose = get_config("scheduling.userPods.nodeAffinity.matchNodePurpose")
if node_purpose == "require":
    node_required.append(user_nodes)
elif node_purpose == "prefer":
    node_preferred.append({"weight": 100, "preference": user_nodes})
elif node_purpose not in (None, "ignore"):
    raise ValueError(f"scheduling.userPods.nodeAffinity.matchNodePurpose: unknown value {node_purpose!r}")
c.KubeSpawner.node_affinity_required = node_required
c.KubeSpawner.node_affinity_preferred = node_preferred

tolerations = chart_copy("scheduling.userPods.tolerations", []) + chart_copy(
    "singleuser.extraTolerations", []
)
if tolerations:
    c.KubeSpawner.tolerations = tolerations

# Home directories. KubeSpawner 7 takes volumes and mounts as mappings, so hub.extraConfig can
# replace one by its key (older ones get lists, see LEGACY_KUBESPAWNER).
volumes, volume_mounts = {}, {}
home = get_config("singleuser.storage.homeMountPath")
storage_type = get_config("singleuser.storage.type")
if storage_type == "dynamic":
    # A PVC per user server, created by KubeSpawner; storageClass null = the default class.
    c.KubeSpawner.storage_pvc_ensure = True
    pvc_template = name_template(get_config("singleuser.storage.dynamic.pvcNameTemplate"))
    claim = "{pvc_name}"
    if LEGACY_KUBESPAWNER:
        # No {pvc_name} before KubeSpawner 7: the volume names its claim with the same template
        # (KubeSpawner 6's default unless one is given).
        claim = pvc_template = pvc_template or "claim-{username}--{servername}"
    if pvc_template:
        c.KubeSpawner.pvc_name_template = pvc_template
    set_config_if_not_none(c.KubeSpawner, "storage_class", "singleuser.storage.dynamic.storageClass")
    set_config_if_not_none(
        c.KubeSpawner, "storage_access_modes", "singleuser.storage.dynamic.storageAccessModes"
    )
    set_config_if_not_none(c.KubeSpawner, "storage_capacity", "singleuser.storage.capacity")
    volume = name_template(get_config("singleuser.storage.dynamic.volumeNameTemplate"))
    volumes[volume] = {"name": volume, "persistentVolumeClaim": {"claimName": claim}}
    volume_mounts[volume] = {
        "name": volume,
        "mountPath": home,
        "subPath": get_config("singleuser.storage.dynamic.subPath"),
    }
elif storage_type == "static":
    # One existing PVC for everyone, a sub-directory each.
    volumes["home"] = {
        "name": "home",
        "persistentVolumeClaim": {"claimName": get_config("singleuser.storage.static.pvcName")},
    }
    volume_mounts["home"] = {
        "name": "home",
        "mountPath": home,
        "subPath": get_config("singleuser.storage.static.subPath"),
    }

# singleuser.extraFiles, from the chart's singleuser Secret.
extra_files = get_config("singleuser.extraFiles") or {}
if extra_files:
    items = [
        {"key": key, "path": key, **({"mode": f["mode"]} if "mode" in f else {})}
        for key, f in extra_files.items()
    ]
    volumes["files"] = {"name": "files", "secret": {"secretName": get_name("singleuser"), "items": items}}
    for i, (key, f) in enumerate(extra_files.items()):
        volume_mounts[f"{i}-files"] = {"name": "files", "mountPath": f["mountPath"], "subPath": key}

# storage.extraVolumes / extraVolumeMounts: a mapping (merged by key) or a list.
extra_volumes = chart_copy("singleuser.storage.extraVolumes") or {}
volumes.update(extra_volumes if isinstance(extra_volumes, dict) else {v["name"]: v for v in extra_volumes})
extra_mounts = chart_copy("singleuser.storage.extraVolumeMounts") or {}
volume_mounts.update(
    extra_mounts
    if isinstance(extra_mounts, dict)
    else {f"{i}-{m['name']}": m for i, m in enumerate(extra_mounts)}
)
if LEGACY_KUBESPAWNER:
    volumes, volume_mounts = list(volumes.values()), list(volume_mounts.values())
c.KubeSpawner.volumes = volumes
c.KubeSpawner.volume_mounts = volume_mounts

init_containers = chart_copy("singleuser.initContainers", [])
metadata = get_config("singleuser.cloudMetadata") or {}
if metadata.get("blockWithIptables"):
    # Before the user's container starts, drop its traffic to the cloud metadata server (which
    # can hand out the node's credentials).
    tools = get_config("singleuser.networkTools")
    init_containers.append(
        {
            "name": "block-cloud-metadata",
            "image": f"{tools['image']['name']}:{tools['image']['tag']}",
            "command": [
                "iptables",
                "--append",
                "OUTPUT",
                "--protocol",
                "tcp",
                "--destination",
                metadata["ip"],
                "--destination-port",
                "80",
                "--jump",
                "DROP",
            ],
            "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}},
            **({"resources": tools["resources"]} if tools.get("resources") else {}),
        }
    )
if init_containers:
    c.KubeSpawner.init_containers = init_containers


# --- 3. services and roles ----------------------------------------------------------------------

services, roles = [], []

if get_config("cull.enabled"):
    if importlib.util.find_spec("jupyterhub_idle_culler"):
        # A hub-managed service with only the permissions the culler needs.
        base_url = get_config("hub.baseUrl") or "/"
        cull = [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--url=http://localhost:8081{base_url.rstrip('/')}/hub/api",
        ]
        role = {
            "name": "jupyterhub-idle-culler",
            "services": ["jupyterhub-idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        }
        for flag, key in (
            ("timeout", "timeout"),
            ("cull-every", "every"),
            ("concurrency", "concurrency"),
            ("max-age", "maxAge"),
        ):
            if get_config(f"cull.{key}"):
                cull.append(f"--{flag}={get_config(f'cull.{key}')}")
        if get_config("cull.users"):
            cull.append("--cull-users")
            role["scopes"].append("admin:users")
        if not get_config("cull.adminUsers"):
            cull.append("--cull-admin-users=false")
        if get_config("cull.removeNamedServers"):
            cull.append("--remove-named-servers")
        services.append({"name": "jupyterhub-idle-culler", "command": cull})
        roles.append(role)
    else:
        print(
            "cull.enabled is true, but jupyterhub_idle_culler is not installed in the hub image:"
            " idle user servers are not culled"
        )

# hub.services and hub.loadRoles are mappings (so values files can merge them); JupyterHub wants
# lists. A service's API token comes from the hub Secret (generated unless given).
for name, service in (chart_copy("hub.services") or {}).items():
    service.setdefault("name", name)
    service.pop("apiToken", None)
    service["api_token"] = get_secret_value(f"hub.services.{name}.apiToken")
    services.append(service)
for name, role in (chart_copy("hub.loadRoles") or {}).items():
    role.setdefault("name", name)
    roles.append(role)
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

if get_config("debug.enabled"):
    c.JupyterHub.log_level = "DEBUG"
    c.Spawner.debug = True


# --- 4. generated secrets -----------------------------------------------------------------------

c.JupyterHub.cookie_secret = get_secret_value("hub.config.JupyterHub.cookie_secret")
c.CryptKeeper.keys = get_secret_value("hub.config.CryptKeeper.keys").split(";")


# --- 5. hub.config ------------------------------------------------------------------------------

# Secrets given in hub.config already went into the hub Secret (and back out above).
SECRET_TRAITS = {
    "JupyterHub": ("proxy_auth_token", "cookie_secret", "services"),
    "ConfigurableHTTPProxy": ("auth_token",),
    "CryptKeeper": ("keys",),
}
for section, traits in (chart_copy("hub.config") or {}).items():
    if not section[:1].isupper():
        # Sections are Configurable class names; anything else is a misplaced value.
        sys.exit(
            f"hub.config.{section}: hub.config keys must be class names like JupyterHub"
            " (is this value meant for another place?)"
        )
    for secret in SECRET_TRAITS.get(section, ()):
        traits.pop(secret, None)
    print(f"Loading hub.config.{section}")
    c[section].update(traits)


# --- 6. jupyterhub_config.d/ and hub.extraConfig -------------------------------------------------

for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "jupyterhub_config.d", "*.py"))):
    print(f"Loading {path}")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"))

for name, code in sorted((get_config("hub.extraConfig") or {}).items()):
    print(f"Loading hub.extraConfig.{name}")
    exec(compile(code, f"hub.extraConfig.{name}", "exec"))
