{{/* Labels shared by every object; component is added per object (hub, proxy, image-puller). */}}
{{- define "hub.labels" -}}
app: jupyterhub
release: {{ .Release.Name }}
chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
heritage: {{ .Release.Service }}
{{- end }}

{{- define "hub.selector" -}}
app: jupyterhub
release: {{ .Release.Name }}
{{- end }}

{{/* image reference "name:tag" of an {name, tag} values object */}}
{{- define "hub.image" -}}
{{ .name }}:{{ .tag }}
{{- end }}
