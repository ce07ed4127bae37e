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

{{/* Defaults of every bridge pod, as the operator reads them (RESONANCE_BRIDGE_POD_TEMPLATE): the
shape of a ResonanceNode's spec.template. */}}
{{- define "resonance.bridgePodTemplate" -}}
{{- $b := .Values.bridge }}
{{- $spec := dict }}
{{- with (default .Values.imagePullSecrets $b.imagePullSecrets) }}{{ $_ := set $spec "imagePullSecrets" . }}{{ end }}
{{- with $b.nodeSelector }}{{ $_ := set $spec "nodeSelector" . }}{{ end }}
{{- with $b.tolerations }}{{ $_ := set $spec "tolerations" . }}{{ end }}
{{- with $b.affinity }}{{ $_ := set $spec "affinity" . }}{{ end }}
{{- with $b.priorityClassName }}{{ $_ := set $spec "priorityClassName" . }}{{ end }}
{{- $metadata := dict "labels" $b.podLabels "annotations" $b.podAnnotations }}
{{- dict "metadata" $metadata "spec" $spec | toJson }}
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

{{/* The operator's default Kafka security (RESONANCE_BRIDGE_KAFKA_SECURITY): kafka.tls and kafka.sasl
in the shape of a ResonanceNode's spec.kafka; tls: {} means TLS with the system's CAs. */}}
{{- define "resonance.kafkaSecurity" -}}
{{- $k := .Values.kafka }}
{{- $security := dict }}
{{- if kindIs "map" $k.tls }}{{ $_ := set $security "tls" $k.tls }}{{ end }}
{{- if kindIs "map" $k.sasl }}{{ $_ := set $security "sasl" $k.sasl }}{{ end }}
{{- $security | toJson }}
{{- end }}

{{/* The same security for the operator's own heartbeat consumer: the bridges' KAFKA_* variables and
files, from the Secrets in the release's namespace, mounted as resonance_operator.mounts mounts them
into a bridge (a test compares the two). Output: a dict of env, volumes and volumeMounts, as JSON. */}}
{{- define "resonance.kafkaFiles" -}}
{{- $k := .Values.kafka }}
{{- $env := list }}{{ $volumes := list }}{{ $mounts := list }}
{{- $tls := kindIs "map" $k.tls }}{{ $sasl := kindIs "map" $k.sasl }}
{{- if or $tls $sasl }}
{{- $env = append $env (dict "name" "KAFKA_SECURITY_PROTOCOL" "value" (printf "%s%s" (ternary "SASL_" "" $sasl) (ternary "SSL" "PLAINTEXT" $tls))) }}
{{- end }}
{{- if $tls }}
{{- with $k.tls.caSecretRef }}
{{- $env = append $env (dict "name" "KAFKA_SSL_CA_FILE" "value" "/etc/resonance/kafka-ca/ca.crt") }}
{{- $volumes = append $volumes (dict "name" "kafka-ca" "secret" (dict "secretName" .name "items" (list (dict "key" .key "path" "ca.crt")) "defaultMode" 288)) }}
{{- $mounts = append $mounts (dict "name" "kafka-ca" "mountPath" "/etc/resonance/kafka-ca" "readOnly" true) }}
{{- end }}
{{- with $k.tls.clientCertSecretRef }}
{{- $env = append $env (dict "name" "KAFKA_SSL_CERT_FILE" "value" "/etc/resonance/kafka-cert/tls.crt") }}
{{- $env = append $env (dict "name" "KAFKA_SSL_KEY_FILE" "value" "/etc/resonance/kafka-cert/tls.key") }}
{{- $volumes = append $volumes (dict "name" "kafka-cert" "secret" (dict "secretName" .name "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key")) "defaultMode" 288)) }}
{{- $mounts = append $mounts (dict "name" "kafka-cert" "mountPath" "/etc/resonance/kafka-cert" "readOnly" true) }}
{{- end }}
{{- end }}
{{- if $sasl }}
{{- $env = append $env (dict "name" "KAFKA_SASL_MECHANISM" "value" $k.sasl.mechanism) }}
{{- with $k.sasl.usernameSecretRef }}
{{- $env = append $env (dict "name" "KAFKA_SASL_USERNAME" "valueFrom" (dict "secretKeyRef" (dict "name" .name "key" .key))) }}
{{- else }}
{{- $env = append $env (dict "name" "KAFKA_SASL_USERNAME" "value" (default "" $k.sasl.username)) }}
{{- end }}
{{- with $k.sasl.passwordSecretRef }}
{{- $env = append $env (dict "name" "KAFKA_SASL_PASSWORD_FILE" "value" "/etc/resonance/kafka-password/password") }}
{{- $volumes = append $volumes (dict "name" "kafka-password" "secret" (dict "secretName" .name "items" (list (dict "key" .key "path" "password")) "defaultMode" 288)) }}
{{- $mounts = append $mounts (dict "name" "kafka-password" "mountPath" "/etc/resonance/kafka-password" "readOnly" true) }}
{{- end }}
{{- end }}
{{- dict "env" $env "volumes" $volumes "volumeMounts" $mounts | toJson }}
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

{{/* What `helm install` prints (NOTES.txt), as a named template so that tests can render it. */}}
{{- define "resonance.notes" -}}
{{- $ns := .Release.Namespace }}
{{- if and (eq .Values.image.repository "ghcr.io/resonance-io/resonance") (not .Values.image.tag) -}}
WARNING: the image is the chart's default, ghcr.io/resonance-io/resonance:{{ .Chart.AppVersion }}, which
exists only once version {{ .Chart.AppVersion }} is released (a v{{ .Chart.AppVersion }} tag runs the release workflow).
If `kubectl get pods -n {{ .Release.Namespace }}` shows ImagePullBackOff, build and load your own:
  make image IMAGE=resonance:dev && kind load docker-image resonance:dev
  helm upgrade {{ .Release.Name }} charts/resonance -n {{ .Release.Namespace }} --reuse-values \
    --set image.repository=resonance --set image.tag=dev --set image.pullPolicy=Never
(`make kind-up` does all of this for a kind cluster.)

{{ end -}}
{{- with .Values.operator.watchNamespaces }}{{ if not (has $ns .) }}{{ $ns = first . }}{{ end }}{{ end -}}
The resonance operator is installed in namespace {{ .Release.Namespace }} and watches
{{- if .Values.operator.watchNamespaces }} namespaces {{ join ", " .Values.operator.watchNamespaces }}{{ else }} every namespace{{ end }}.
Bridges use Kafka at {{ include "resonance.bootstrapServers" . }} unless a node sets spec.kafka.bootstrapServers.
{{- if .Values.demo.enabled }}

The demo nodes lexamoris and nexus run in {{ .Release.Namespace }}, with their ResonanceNodes. Within a
minute or two (image pulls, Kafka starting) both are READY True:
  kubectl wait --for=condition=Ready resonancenodes --all -n {{ .Release.Namespace }} --timeout=300s
  kubectl get resonancenodes -n {{ .Release.Namespace }}
{{- else }}

Next, point a ResonanceNode at your Resonance node's WebSocket endpoint and apply it:
  kubectl apply -n {{ $ns }} -f - <<'NODE'
  apiVersion: resonance.io/v1alpha1
  kind: ResonanceNode
  metadata: {name: lexamoris}
  spec: {endpoint: "ws://YOUR-NODE-HOST:8766", topic: resonance.lexamoris, anchor: BOLZANO_71}
  NODE
  kubectl get resonancenodes -n {{ $ns }}
examples/lexamoris-node.yaml points at ws://lexamoris-server:8766, a Service that only the demo
(--set demo.enabled=true) provides, in the release namespace.
{{- end }}
{{- end }}
