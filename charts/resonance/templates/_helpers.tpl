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

{{/* Selector labels name only the app and the instance: they must never change across upgrades. */}}
{{- define "resonance.selectorLabels" -}}
app.kubernetes.io/name: {{ include "resonance.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "resonance.labels" -}}
helm.sh/chart: {{ include "resonance.chart" . }}
{{ include "resonance.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resonance
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
