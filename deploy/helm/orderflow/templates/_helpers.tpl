{{/* The release's name prefix. */}}
{{- define "orderflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "orderflow.labels" -}}
app.kubernetes.io/part-of: orderflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one role: pass (dict "root" $ "name" $name). */}}
{{- define "orderflow.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The image, refusing a missing or `latest` tag (`required`, not `fail`: helm lint reports it). */}}
{{- define "orderflow.image" -}}
{{- $tag := required "image.tag is required (the commit's tag; never latest)" .Values.image.tag -}}
{{- $tag = required "image.tag must not be latest: deploy the commit's tag" (ternary "" $tag (eq $tag "latest")) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* One role's settings: the defaults, overridden by its own block. Pass (dict "root" $ "raw" $raw). Returns YAML. */}}
{{- define "orderflow.role" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy .raw) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* The name of the Secret holding connection strings. */}}
{{- define "orderflow.secretName" -}}
{{- if .Values.secrets.externalSecret.enabled -}}
{{- printf "%s-secrets" (include "orderflow.fullname" .) -}}
{{- else -}}
{{- .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}
