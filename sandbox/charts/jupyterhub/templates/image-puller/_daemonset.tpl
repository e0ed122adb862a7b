{{- /*
Image pullers: DaemonSets whose pods run, on every user node, one init container per image user
pods will need (each just prints a line, so its image is pulled), then a pause container.

- continuous-image-puller stays, so nodes added later pull the images too;
- hook-image-puller is a pre-install/pre-upgrade hook: with the hook-image-awaiter Job it holds the
  upgrade until every node has the images, then helm deletes both.
*/}}

{{- /* (list $ "hook"|"continuous"): the DaemonSet. */}}
{{- define "jupyterhub.imagePullerDaemonSet" -}}
{{- $root := index . 0 -}}
{{- $kind := index . 1 -}}
{{- $hook := eq $kind "hook" -}}
{{- $v := $root.Values -}}
{{- $pp := $v.prePuller -}}
{{- $names := include "jupyterhub.names" $root | fromYaml -}}
{{- $component := printf "%s-image-puller" $kind -}}
{{- $pullers := include "jupyterhub.imagePullerContainers" $root | fromYamlArray -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ index $names $component }}
  labels:
    {{- include "jupyterhub.labels" (list $root $component) | nindent 4 }}
    {{- if $hook }}
    hub.jupyter.org/deletable: "true"
    {{- end }}
  {{- $annotations := ternary $pp.hook.daemonsetAnnotations $pp.continuous.daemonsetAnnotations $hook }}
  {{- if $hook }}
  {{- /* Created before the awaiter Job (weight 10), deleted once the hook succeeded. */}}
  {{- $annotations = merge (include "jupyterhub.hookAnnotations" -10 | fromYaml) $annotations }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "jupyterhub.selectorLabels" (list $root $component) | nindent 6 }}
  {{- /* All nodes at once: a puller pod serves no one, it only pulls. */}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 100%
  {{- if not (kindIs "invalid" $pp.revisionHistoryLimit) }}
  revisionHistoryLimit: {{ $pp.revisionHistoryLimit }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "jupyterhub.podLabels" (list $root $component) | nindent 8 }}
        {{- with $pp.labels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $pp.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- if $v.scheduling.podPriority.enabled }}
      priorityClassName: {{ index $names "image-puller-priority" }}
      {{- end }}
      {{- /* Scheduled like user pods, so they land on the nodes user pods will use. */}}
      {{- with $v.singleuser.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with concat $v.scheduling.userPods.tolerations $v.singleuser.extraTolerations $pp.extraTolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "jupyterhub.userAffinity" $root | fromYaml | dig "nodeAffinity" "requiredDuringSchedulingIgnoredDuringExecution" dict }}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            {{- toYaml . | nindent 12 }}
      {{- end }}
      terminationGracePeriodSeconds: 0
      serviceAccountName: {{ index $names (printf "%s-serviceaccount" $component) }}
      automountServiceAccountToken: false
      {{- with include "jupyterhub.imagePullSecrets" (list $root $v.singleuser.image) }}
      imagePullSecrets: {{ . }}
      {{- end }}
      initContainers:
        {{- range $pullers }}
        - name: {{ .name }}
          image: {{ .image }}
          {{- with .pullPolicy }}
          imagePullPolicy: {{ . }}
          {{- end }}
          command: ["/bin/sh", "-c", "echo \"Pulling complete\""]
          {{- with $pp.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $pp.containerSecurityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        {{- end }}
      containers:
        - name: pause
          image: {{ include "jupyterhub.image" $pp.pause.image }}
          {{- with $pp.pause.image.pullPolicy }}
          imagePullPolicy: {{ . }}
          {{- end }}
          {{- /* The pause image's own entrypoint, spelled out. */}}
          command: ["/pause"]
          {{- with $pp.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $pp.pause.containerSecurityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
{{- end }}

{{- /*
The images to pull, as a YAML list of {name, image, pullPolicy}: the network-tools image (when
user pods block the cloud metadata server with iptables), the user image, the images of
singleuser init/extra containers, of profileList overrides (with prePuller.pullProfileListImages)
and prePuller.extraImages.
*/}}
{{- define "jupyterhub.imagePullerContainers" -}}
{{- $v := .Values -}}
{{- $su := $v.singleuser -}}
{{- $pullers := list -}}
{{- if $su.cloudMetadata.blockWithIptables -}}
{{- $pullers = append $pullers (dict "name" "image-pull-metadata-block" "image" (include "jupyterhub.image" $su.networkTools.image) "pullPolicy" $su.networkTools.image.pullPolicy) -}}
{{- end -}}
{{- $pullers = append $pullers (dict "name" "image-pull-singleuser" "image" (include "jupyterhub.image" $su.image) "pullPolicy" $su.image.pullPolicy) -}}
{{- range $i, $c := concat $su.initContainers $su.extraContainers -}}
{{- $pullers = append $pullers (dict "name" (printf "image-pull-singleuser-init-and-extra-containers-%d" $i) "image" $c.image) -}}
{{- end -}}
{{- if $v.prePuller.pullProfileListImages -}}
{{- range $i, $profile := $su.profileList -}}
{{- with dig "kubespawner_override" "image" "" $profile -}}
{{- $pullers = append $pullers (dict "name" (printf "image-pull-singleuser-profilelist-%d" $i) "image" .) -}}
{{- end -}}
{{- range $option, $spec := $profile.profile_options | default dict -}}
{{- range $choice, $choiceSpec := $spec.choices | default dict -}}
{{- with dig "kubespawner_override" "image" "" $choiceSpec -}}
{{- $pullers = append $pullers (dict "name" (printf "image-pull-profile-%d-option-%s-%s" $i $option $choice) "image" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key, $image := $v.prePuller.extraImages -}}
{{- $pullers = append $pullers (dict "name" (printf "image-pull-%s" $key) "image" (include "jupyterhub.image" $image) "pullPolicy" $image.pullPolicy) -}}
{{- end -}}
{{- toYaml $pullers -}}
{{- end }}

{{- /*
A checksum of the hook DaemonSet, stored in the hub ConfigMap. The chart version is left out, so
a new chart version alone does not count as a change.
*/}}
{{- define "jupyterhub.hookImagePullerChecksum" -}}
{{- $pinned := merge (dict "Chart" (dict "Name" .Chart.Name "Version" "pinned")) . -}}
{{- include "jupyterhub.imagePullerDaemonSet" (list $pinned "hook") | sha256sum -}}
{{- end }}

{{- /*
Whether the pre-pull hook runs ("true" or ""): prePuller.hook.enabled and, with pullOnlyOnChanges,
only when the hook DaemonSet differs from the one recorded in the hub ConfigMap at the last
install or upgrade (without a cluster there is no record, so it always runs).
*/}}
{{- define "jupyterhub.hookImagePullerRuns" -}}
{{- $hook := .Values.prePuller.hook -}}
{{- if $hook.enabled -}}
{{- if $hook.pullOnlyOnChanges -}}
{{- $hubName := include "jupyterhub.names" . | fromYaml | dig "hub" "" -}}
{{- $configMap := lookup "v1" "ConfigMap" .Release.Namespace $hubName | default dict -}}
{{- $recorded := dig "data" "checksum_hook-image-puller" "" $configMap -}}
{{- if ne $recorded (include "jupyterhub.hookImagePullerChecksum" .) }}true{{ end -}}
{{- else -}}
true
{{- end -}}
{{- end -}}
{{- end }}

{{- /* (weight): the annotations of a pre-pull hook object. */}}
{{- define "jupyterhub.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
helm.sh/hook-weight: {{ . | quote }}
{{- end }}
