{{- /*
Shared helpers: object names, labels, images, env, scheduling and probes.
Helpers that need the root context and an argument take a list: (list $ <argument>).
*/}}


{{- /* ---- names ---------------------------------------------------------------------------- */}}

{{- /*
The prefix of every object name. fullnameOverride "" (the default) gives no prefix, a string is
the prefix itself, null gives the release name, followed by nameOverride (or the chart name)
unless the release name already contains it.
*/}}
{{- define "jupyterhub.fullname" -}}
{{- if kindIs "string" .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else -}}
{{- $name := .Values.nameOverride | default .Chart.Name -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* A service account's name: the given name, else ours when we create it, else "default". */}}
{{- define "jupyterhub.serviceAccountName" -}}
{{- $account := index . 0 -}}
{{- $ours := index . 1 -}}
{{- $account.name | default (ternary $ours "default" (eq $account.create true)) -}}
{{- end }}

{{- /*
Every object name of a release as YAML, short name -> name. Templates read it with
`include "jupyterhub.names" . | fromYaml`; the hub ConfigMap publishes it so the hub's config
(z2jh.get_name) and other charts find the objects.
Cluster-wide objects (scheduler, priority classes) carry the release name when there is no
prefix, so two releases in one cluster do not collide.
*/}}
{{- define "jupyterhub.names" -}}
{{- $prefix := include "jupyterhub.fullname" . -}}
{{- $p := ternary "" (printf "%s-" $prefix) (eq $prefix "") -}}
{{- $v := .Values -}}
fullname: {{ $prefix | quote }}
fullname-dash: {{ $p | quote }}
hub: {{ print $p "hub" | quote }}
hub-serviceaccount: {{ include "jupyterhub.serviceAccountName" (list $v.hub.serviceAccount (print $p "hub")) | quote }}
hub-existing-secret: {{ $v.hub.existingSecret | default "" | quote }}
hub-existing-secret-or-default: {{ $v.hub.existingSecret | default (print $p "hub") | quote }}
hub-pvc: {{ print $p "hub-db-dir" | quote }}
proxy: {{ print $p "proxy" | quote }}
proxy-api: {{ print $p "proxy-api" | quote }}
proxy-public: {{ print $p "proxy-public" | quote }}
proxy-public-manual-tls: {{ print $p "proxy-public-manual-tls" | quote }}
user-scheduler-deploy: {{ print $p "user-scheduler" | quote }}
user-scheduler-serviceaccount: {{ include "jupyterhub.serviceAccountName" (list $v.scheduling.userScheduler.serviceAccount (print $p "user-scheduler")) | quote }}
user-scheduler-lock: {{ print $p "user-scheduler-lock" | quote }}
user-placeholder: {{ print $p "user-placeholder" | quote }}
hook-image-awaiter: {{ print $p "hook-image-awaiter" | quote }}
hook-image-awaiter-serviceaccount: {{ include "jupyterhub.serviceAccountName" (list $v.prePuller.hook.serviceAccount (print $p "hook-image-awaiter")) | quote }}
hook-image-puller: {{ print $p "hook-image-puller" | quote }}
hook-image-puller-serviceaccount: {{ include "jupyterhub.serviceAccountName" (list $v.prePuller.hook.serviceAccountImagePuller (print $p "hook-image-puller")) | quote }}
continuous-image-puller: {{ print $p "continuous-image-puller" | quote }}
continuous-image-puller-serviceaccount: {{ include "jupyterhub.serviceAccountName" (list $v.prePuller.continuous.serviceAccount (print $p "continuous-image-puller")) | quote }}
singleuser: {{ print $p "singleuser" | quote }}
image-pull-secret: {{ print $p "image-pull-secret" | quote }}
ingress: {{ $prefix | default "jupyterhub" | quote }}
{{- if $prefix }}
user-scheduler: {{ print $p "user-scheduler" | quote }}
priority: {{ $prefix | quote }}
user-placeholder-priority: {{ print $p "user-placeholder" | quote }}
image-puller-priority: {{ print $p "image-puller" | quote }}
{{- else }}
user-scheduler: {{ print .Release.Name "-user-scheduler" | quote }}
priority: {{ print .Release.Name "-default-priority" | quote }}
user-placeholder-priority: {{ print .Release.Name "-user-placeholder-priority" | quote }}
image-puller-priority: {{ print .Release.Name "-image-puller-priority" | quote }}
{{- end }}
{{- end }}


{{- /* ---- labels ------------------------------------------------------------------------------
Objects carry the legacy labels (component, app, release, chart, heritage) and their
app.kubernetes.io / helm.sh equivalents. Selectors use only the legacy component, app and release
(selectors are immutable, so they keep what older releases used); pod templates add the modern
component, name and instance.
*/}}

{{- define "jupyterhub.appLabel" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- /* (list $ "component") */}}
{{- define "jupyterhub.selectorLabels" -}}
{{- $root := index . 0 -}}
component: {{ index . 1 }}
app: {{ include "jupyterhub.appLabel" $root | quote }}
release: {{ $root.Release.Name | quote }}
{{- end }}

{{- /* (list $ "component"): the selector labels plus the modern ones that identify a pod. */}}
{{- define "jupyterhub.podLabels" -}}
{{- $root := index . 0 -}}
{{ include "jupyterhub.selectorLabels" . }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/name: {{ include "jupyterhub.appLabel" $root | quote }}
app.kubernetes.io/instance: {{ $root.Release.Name | quote }}
{{- end }}

{{- /* (list $ "component"): every object's metadata labels. */}}
{{- define "jupyterhub.labels" -}}
{{- $root := index . 0 -}}
{{- $chart := printf "%s-%s" $root.Chart.Name ($root.Chart.Version | replace "+" "_") -}}
{{ include "jupyterhub.podLabels" . }}
chart: {{ $chart }}
heritage: {{ $root.Release.Service }}
helm.sh/chart: {{ $chart }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}


{{- /* ---- images ---------------------------------------------------------------------------- */}}

{{- /* An {name, tag} image value as "name:tag". */}}
{{- define "jupyterhub.image" -}}
{{- printf "%s:%s" .name .tag -}}
{{- end }}

{{- /*
(list $ image): a pod's imagePullSecrets as a JSON list (empty output when there are none): the
image's pullSecrets, the chart-wide imagePullSecrets and, when the chart creates it, its own
registry Secret. Entries may be names or {name: ...} objects.
*/}}
{{- define "jupyterhub.imagePullSecrets" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $all := concat ($image.pullSecrets | default list) $root.Values.imagePullSecrets -}}
{{- if and $root.Values.imagePullSecret.create $root.Values.imagePullSecret.automaticReferenceInjection -}}
{{- $all = append $all (include "jupyterhub.names" $root | fromYaml | dig "image-pull-secret" "") -}}
{{- end -}}
{{- $refs := list -}}
{{- range $all | uniq -}}
{{- $refs = append $refs (ternary (dict "name" .) . (kindIs "string" .)) -}}
{{- end -}}
{{- with $refs }}{{ toJson . }}{{ end -}}
{{- end }}


{{- /* ---- containers ------------------------------------------------------------------------ */}}

{{- /*
extraEnv as EnvVar list entries. A list is taken as it is; in a mapping, a string value is the
variable's value and a mapping value is an EnvVar (valueFrom, ...) whose name defaults to its key.
*/}}
{{- define "jupyterhub.extraEnv" -}}
{{- if kindIs "slice" . -}}
{{ toYaml . }}
{{- else -}}
{{- range $name, $value := . }}
{{- if kindIs "map" $value }}
{{ list (merge (dict) $value (dict "name" $name)) | toYaml }}
{{- else if kindIs "string" $value }}
- name: {{ $name | quote }}
  value: {{ $value | quote }}
{{- else }}
{{- fail (printf "extraEnv.%s must be a string or an EnvVar mapping, not %s" $name (kindOf $value)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- /* (list probeValues path port scheme): an httpGet probe with the configured timings. */}}
{{- define "jupyterhub.httpProbe" -}}
{{- $probe := index . 0 -}}
initialDelaySeconds: {{ $probe.initialDelaySeconds }}
periodSeconds: {{ $probe.periodSeconds }}
timeoutSeconds: {{ $probe.timeoutSeconds }}
failureThreshold: {{ $probe.failureThreshold }}
httpGet:
  path: {{ index . 1 }}
  port: {{ index . 2 }}
  {{- with index . 3 }}
  scheme: {{ . }}
  {{- end }}
{{- end }}


{{- /* ---- scheduling ------------------------------------------------------------------------ */}}

{{- /* The node-purpose affinity of core pods (hub, proxy, user-scheduler): prefer or require "core". */}}
{{- define "jupyterhub.coreAffinity" -}}
{{- $purpose := .Values.scheduling.corePods.nodeAffinity.matchNodePurpose -}}
{{- $term := dict "matchExpressions" (list (dict "key" "hub.jupyter.org/node-purpose" "operator" "In" "values" (list "core"))) -}}
{{- if eq $purpose "require" -}}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        {{- list $term | toYaml | nindent 8 }}
{{- else if eq $purpose "prefer" -}}
affinity:
  nodeAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      {{- list (dict "weight" 100 "preference" $term) | toYaml | nindent 6 }}
{{- end }}
{{- end }}

{{- /*
The affinity of user pods as KubeSpawner builds it (node purpose "user" plus the singleuser.extra*
affinities), for the pods standing in for users: the image pullers (required node terms only)
and the user placeholders (all of it). Renders a YAML mapping, {} when empty.
*/}}
{{- define "jupyterhub.userAffinity" -}}
{{- $su := .Values.singleuser -}}
{{- $purpose := .Values.scheduling.userPods.nodeAffinity.matchNodePurpose -}}
{{- $term := dict "matchExpressions" (list (dict "key" "hub.jupyter.org/node-purpose" "operator" "In" "values" (list "user"))) -}}
{{- $nodeRequired := $su.extraNodeAffinity.required -}}
{{- $nodePreferred := $su.extraNodeAffinity.preferred -}}
{{- if eq $purpose "require" }}{{ $nodeRequired = prepend $nodeRequired $term }}{{ end -}}
{{- if eq $purpose "prefer" }}{{ $nodePreferred = prepend $nodePreferred (dict "weight" 100 "preference" $term) }}{{ end -}}
{{- $affinity := dict -}}
{{- $node := dict -}}
{{- with $nodeRequired }}{{ $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" .) }}{{ end -}}
{{- with $nodePreferred }}{{ $_ := set $node "preferredDuringSchedulingIgnoredDuringExecution" . }}{{ end -}}
{{- with $node }}{{ $_ := set $affinity "nodeAffinity" . }}{{ end -}}
{{- range $kind, $values := dict "podAffinity" $su.extraPodAffinity "podAntiAffinity" $su.extraPodAntiAffinity -}}
{{- $a := dict -}}
{{- with $values.required }}{{ $_ := set $a "requiredDuringSchedulingIgnoredDuringExecution" . }}{{ end -}}
{{- with $values.preferred }}{{ $_ := set $a "preferredDuringSchedulingIgnoredDuringExecution" . }}{{ end -}}
{{- with $a }}{{ $_ := set $affinity $kind . }}{{ end -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end }}

{{- /* A user pod's resources from singleuser.cpu/memory/extraResource (requests = guarantees). */}}
{{- define "jupyterhub.singleuserResources" -}}
{{- $su := .Values.singleuser -}}
{{- $requests := dict -}}
{{- $limits := dict -}}
{{- with $su.cpu.guarantee }}{{ $_ := set $requests "cpu" . }}{{ end -}}
{{- with $su.memory.guarantee }}{{ $_ := set $requests "memory" . }}{{ end -}}
{{- with $su.cpu.limit }}{{ $_ := set $limits "cpu" . }}{{ end -}}
{{- with $su.memory.limit }}{{ $_ := set $limits "memory" . }}{{ end -}}
{{- $requests = merge $requests $su.extraResource.guarantees -}}
{{- $limits = merge $limits $su.extraResource.limits -}}
{{- $resources := dict -}}
{{- with $requests }}{{ $_ := set $resources "requests" . }}{{ end -}}
{{- with $limits }}{{ $_ := set $resources "limits" . }}{{ end -}}
{{- with $resources }}{{ toYaml . }}{{ end -}}
{{- end }}


{{- /* ---- network policies ------------------------------------------------------------------ */}}

{{- /*
(list $ networkPolicyValues): the egress rules egressAllowRules turns on, then the user's own
egress rules. "Private" means the RFC 1918 ranges.
*/}}
{{- define "jupyterhub.egressRules" -}}
{{- $root := index . 0 -}}
{{- $np := index . 1 -}}
{{- $allow := $np.egressAllowRules -}}
{{- $metadata := printf "%s/32" $root.Values.singleuser.cloudMetadata.ip -}}
{{- $private := list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" -}}
{{- $rules := list -}}
{{- $dnsPeers := list -}}
{{- if $allow.dnsPortsCloudMetadataServer }}{{ $dnsPeers = append $dnsPeers (dict "ipBlock" (dict "cidr" $metadata)) }}{{ end -}}
{{- if $allow.dnsPortsKubeSystemNamespace }}{{ $dnsPeers = append $dnsPeers (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" "kube-system"))) }}{{ end -}}
{{- if $allow.dnsPortsPrivateIPs }}{{ range $private }}{{ $dnsPeers = append $dnsPeers (dict "ipBlock" (dict "cidr" .)) }}{{ end }}{{ end -}}
{{- with $dnsPeers -}}
{{- $rules = append $rules (dict "ports" (list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP")) "to" .) -}}
{{- end -}}
{{- if $allow.nonPrivateIPs -}}
{{- $rules = append $rules (dict "to" (list (dict "ipBlock" (dict "cidr" "0.0.0.0/0" "except" (append $private $metadata))))) -}}
{{- end -}}
{{- if $allow.privateIPs -}}
{{- $peers := list }}{{ range $private }}{{ $peers = append $peers (dict "ipBlock" (dict "cidr" .)) }}{{ end -}}
{{- $rules = append $rules (dict "to" $peers) -}}
{{- end -}}
{{- if $allow.cloudMetadataServer -}}
{{- $rules = append $rules (dict "to" (list (dict "ipBlock" (dict "cidr" $metadata)))) -}}
{{- end -}}
{{- $rules = concat $rules $np.egress -}}
{{- with $rules }}{{ toYaml . }}{{ end -}}
{{- end }}

{{- /*
(list $ networkPolicyValues "port" "access-label"): the ingress rule admitting pods labelled
hub.jupyter.org/<access-label>: "true" to a port; with interNamespaceAccessLabels "accept" also
such pods in other namespaces and all pods of namespaces carrying that label.
*/}}
{{- define "jupyterhub.labelledIngressRule" -}}
{{- $np := index . 1 -}}
{{- $label := dict (printf "hub.jupyter.org/%s" (index . 3)) "true" -}}
{{- $from := list -}}
{{- if eq $np.interNamespaceAccessLabels "accept" -}}
{{- $from = list (dict "podSelector" (dict "matchLabels" $label) "namespaceSelector" (dict "matchLabels" dict)) (dict "namespaceSelector" (dict "matchLabels" $label)) -}}
{{- else -}}
{{- $from = list (dict "podSelector" (dict "matchLabels" $label)) -}}
{{- end -}}
- ports:
    {{- range splitList "," (index . 2) }}
    - port: {{ . }}
    {{- end }}
  from:
    {{- toYaml $from | nindent 4 }}
{{- end }}

{{- /* (list allowedIngressPorts): a rule opening these ports to any source (nothing when empty). */}}
{{- define "jupyterhub.openPortsRule" -}}
{{- with index . 0 }}
- ports:
    {{- range . }}
    - port: {{ . }}
    {{- end }}
{{- end }}
{{- end }}


{{- /* ---- extra files ----------------------------------------------------------------------- */}}

{{- /*
A Secret's data entries for hub.extraFiles or singleuser.extraFiles, key -> base64 content. Each
file gives exactly one of: stringData (text), binaryData (base64), or data (a structure written
as YAML, JSON or TOML after the extension of its mountPath).
*/}}
{{- define "jupyterhub.extraFilesData" -}}
{{- range $key, $file := . }}
{{- if not $file.mountPath }}
{{- fail (printf "extraFiles.%s needs a mountPath" $key) }}
{{- end }}
{{- $given := 0 }}
{{- range $field := list "data" "stringData" "binaryData" }}{{ if hasKey $file $field }}{{ $given = add1 $given }}{{ end }}{{ end }}
{{- if ne $given 1 }}
{{- fail (printf "extraFiles.%s needs exactly one of data, stringData and binaryData" $key) }}
{{- end }}
{{- $content := "" }}
{{- if hasKey $file "binaryData" }}
{{- $content = $file.binaryData | nospace }}
{{- else if hasKey $file "stringData" }}
{{- $content = $file.stringData | b64enc }}
{{- else }}
{{- $ext := ext $file.mountPath }}
{{- if has $ext (list ".yaml" ".yml") }}{{ $content = toYaml $file.data | b64enc }}
{{- else if eq $ext ".json" }}{{ $content = toJson $file.data | b64enc }}
{{- else if eq $ext ".toml" }}{{ $content = toToml $file.data | b64enc }}
{{- else }}{{ fail (printf "extraFiles.%s: data is written as YAML, JSON or TOML, so its mountPath must end with .yaml, .yml, .json or .toml" $key) }}
{{- end }}
{{- end }}
{{ $key | quote }}: {{ $content | quote }}
{{- end }}
{{- end }}


{{- /* ---- disruption budgets ---------------------------------------------------------------- */}}

{{- /* (list $ component name pdbValues): a PodDisruptionBudget for a component's pods. */}}
{{- define "jupyterhub.podDisruptionBudget" -}}
{{- $root := index . 0 -}}
{{- $pdb := index . 3 -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ index . 2 }}
  labels:
    {{- include "jupyterhub.labels" (list $root (index . 1)) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $pdb.maxUnavailable) }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- end }}
  {{- if not (kindIs "invalid" $pdb.minAvailable) }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "jupyterhub.selectorLabels" (list $root (index . 1)) | nindent 6 }}
{{- end }}


{{- /* ---- https ----------------------------------------------------------------------------- */}}

{{- /*
How proxy-public serves HTTPS: "" (plain HTTP), "offload" (TLS ends in front of the chart, port 443
leads to CHP's http port), "manual" or "secret" (CHP terminates TLS with a certificate from the
values or from an existing Secret). letsencrypt needs the autohttps (traefik) pod, which this
stand-in does not have, so it is refused; like Z2JH, it means nothing without hosts.
*/}}
{{- define "jupyterhub.httpsMode" -}}
{{- $https := .Values.proxy.https -}}
{{- if $https.enabled -}}
{{- if ne $https.type "letsencrypt" -}}
{{- $https.type -}}
{{- else if $https.hosts -}}
{{- fail "proxy.https.type letsencrypt needs the autohttps (traefik) pod, which hubploy's jupyterhub stand-in chart does not render; use offload, manual or secret" -}}
{{- end -}}
{{- end -}}
{{- end }}
