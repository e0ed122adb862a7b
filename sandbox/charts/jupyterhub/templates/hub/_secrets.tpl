{{- /*
Values the chart generates when the user gives none, kept across upgrades.

Each helper takes, in this order:
  1. the value set in the chart values (hub.config.<Class>.<trait>, or the older short key),
  2. the value the hub Secret of this release already holds (`lookup`, so an upgrade keeps it),
  3. a new random value.
Without a cluster (`helm template`, `--dry-run=client`) lookup finds nothing, so every render
generates new values.
*/}}

{{- /* The data of the release's hub Secret as it is in the cluster ({} when absent). */}}
{{- define "jupyterhub.hubSecretData" -}}
{{- $name := include "jupyterhub.names" . | fromYaml | dig "hub" "" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace $name | default dict -}}
{{- toJson ($secret.data | default dict) -}}
{{- end }}

{{- /* (list $ secretKey configured): configured if set, else the Secret's current value, else "". */}}
{{- define "jupyterhub.keptValue" -}}
{{- $root := index . 0 -}}
{{- $configured := index . 2 -}}
{{- if $configured -}}
{{- $configured -}}
{{- else -}}
{{- $current := include "jupyterhub.hubSecretData" $root | fromJson -}}
{{- index $current (index . 1) | default "" | b64dec -}}
{{- end -}}
{{- end }}

{{- /* The token the hub and configurable-http-proxy share: 64 random letters and digits. */}}
{{- define "jupyterhub.proxyAuthToken" -}}
{{- $configured := dig "ConfigurableHTTPProxy" "auth_token" "" .Values.hub.config | default .Values.proxy.secretToken -}}
{{- include "jupyterhub.keptValue" (list . "hub.config.ConfigurableHTTPProxy.auth_token" $configured) | default (randAlphaNum 64) -}}
{{- end }}

{{- /* JupyterHub.cookie_secret: JupyterHub wants hex, so 256 random bits as 64 hex digits. */}}
{{- define "jupyterhub.cookieSecret" -}}
{{- $configured := dig "JupyterHub" "cookie_secret" "" .Values.hub.config | default .Values.hub.cookieSecret -}}
{{- include "jupyterhub.keptValue" (list . "hub.config.JupyterHub.cookie_secret" $configured) | default (randAlphaNum 64 | sha256sum) -}}
{{- end }}

{{- /* CryptKeeper.keys joined with ";": each a 32-byte key, generated as base64 (randBytes 32). */}}
{{- define "jupyterhub.cryptKeys" -}}
{{- $configured := dig "CryptKeeper" "keys" list .Values.hub.config | join ";" -}}
{{- include "jupyterhub.keptValue" (list . "hub.config.CryptKeeper.keys" $configured) | default (randBytes 32) -}}
{{- end }}

{{- /* (list $ serviceName): the API token of a hub.services entry. */}}
{{- define "jupyterhub.serviceApiToken" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $service := index $root.Values.hub.services $name | default dict -}}
{{- $configured := $service.apiToken | default $service.api_token -}}
{{- include "jupyterhub.keptValue" (list $root (printf "hub.services.%s.apiToken" $name) $configured) | default (randAlphaNum 64 | sha256sum) -}}
{{- end }}
