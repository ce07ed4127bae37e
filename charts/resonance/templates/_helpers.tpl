{{/* Names, truncated to 63 characters as Kubernetes names and label values must be. */}}
{{- define "resonance.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "resonance.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "resonance.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The app and the instance: every object of the release carries them. */}}
{{- define "resonance.releaseLabels" -}}
app.kubernetes.io/name: {{ include "resonance.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of objects that belong to no single workload (RBAC, ServiceAccount, ResonanceNodes). */}}
{{- define "resonance.labels" -}}
helm.sh/chart: {{ include "resonance.chart" . }}
{{ include "resonance.releaseLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resonance
{{- end }}

{{/*
Selector labels of one workload: the app, the instance and its component, distinct per workload so no
Deployment's selector matches another's pods. A Deployment's selector is immutable: never change them.
Call with (dict "context" $ "component" "operator").
*/}}
{{- define "resonance.selectorLabels" -}}
{{ include "resonance.releaseLabels" .context }}
app.kubernetes.io/component: {{ required "resonance.selectorLabels needs a component" .component }}
{{- end }}

{{/* Labels of a workload and of its Service: the common labels and its component. Same dict as above. */}}
{{- define "resonance.componentLabels" -}}
{{ include "resonance.labels" .context }}
app.kubernetes.io/component: {{ required "resonance.componentLabels needs a component" .component }}
{{- end }}

{{- define "resonance.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "resonance.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "resonance.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "resonance.kafkaDevName" -}}
{{- printf "%s-kafka" (include "resonance.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The bridges' default Kafka: the dev broker when it is deployed, else the configured one. */}}
{{- define "resonance.bootstrapServers" -}}
{{- if .Values.kafka.dev.enabled }}
{{- printf "%s.%s.svc:9092" (include "resonance.kafkaDevName" .) .Release.Namespace }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* A restricted container security context (Pod Security Standards, restricted profile). */}}
{{- define "resonance.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}
