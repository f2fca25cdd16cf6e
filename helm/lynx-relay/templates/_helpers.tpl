{{/*
Names, labels and the checks every template shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "lynx-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name, truncated at 63 characters because some Kubernetes name fields
are limited to that (DNS label). A release name that already contains the chart name is used
as it is.
*/}}
{{- define "lynx-relay.fullname" -}}
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

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "lynx-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "lynx-relay.labels" -}}
helm.sh/chart: {{ include "lynx-relay.chart" . }}
{{ include "lynx-relay.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lynx-relay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so they never include the version. */}}
{{- define "lynx-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lynx-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
metadata.annotations of a top-level object: commonAnnotations merged with the object's own.
Usage, directly under `labels:` and with no indent of its own:
  {{- include "lynx-relay.annotations" (dict "context" $ "annotations" .Values.x.annotations) }}
Renders nothing (not even an empty line) when both are empty.
*/}}
{{- define "lynx-relay.annotations" -}}
{{- $all := merge (dict) (.annotations | default dict) (.context.Values.commonAnnotations | default dict) }}
{{- with $all }}
{{- printf "annotations:\n%s" (toYaml . | indent 2) | nindent 2 }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "lynx-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lynx-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: registry/repository, then @digest or :tag (appVersion by default). */}}
{{- define "lynx-relay.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repo = printf "%s/%s" . $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* The Secret holding FAL_KEY and the SASL password: the existing one, or the chart's. */}}
{{- define "lynx-relay.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "lynx-relay.fullname" .) }}
{{- end }}

{{/* "true" when the Kafka security protocol is SASL_PLAINTEXT or SASL_SSL. */}}
{{- define "lynx-relay.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.config.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* "true" when the Kafka security protocol uses TLS (SSL or SASL_SSL). */}}
{{- define "lynx-relay.tlsEnabled" -}}
{{- if hasSuffix "SSL" .Values.config.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* "true" when FAL_KEY is taken from a Secret (an existing one, or the chart's). */}}
{{- define "lynx-relay.falKeyFromSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.falKey }}true{{ end }}
{{- end }}

{{/* Where a CA bundle from caSecret/caConfigMap is mounted. */}}
{{- define "lynx-relay.kafkaCaDir" -}}
/etc/lynx-relay/kafka-ca
{{- end }}

{{/* KAFKA_SSL_CAFILE: an explicit path, else the mounted bundle, else nothing (system CAs). */}}
{{- define "lynx-relay.kafkaCaFile" -}}
{{- $tls := .Values.config.kafka.tls }}
{{- if $tls.caFile }}
{{- $tls.caFile }}
{{- else if $tls.caSecret.name }}
{{- printf "%s/%s" (include "lynx-relay.kafkaCaDir" .) $tls.caSecret.key }}
{{- else if $tls.caConfigMap.name }}
{{- printf "%s/%s" (include "lynx-relay.kafkaCaDir" .) $tls.caConfigMap.key }}
{{- end }}
{{- end }}

{{/* The ConfigMap of the tenants file (config.relay.tenants). */}}
{{- define "lynx-relay.tenantsConfigMap" -}}
{{- printf "%s-tenants" (include "lynx-relay.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the tenants ConfigMap is mounted (a directory: no subPath, so nothing is pinned). */}}
{{- define "lynx-relay.tenantsDir" -}}
/etc/lynx-relay/tenants
{{- end }}

{{/* RELAY_TENANTS_FILE: the mounted file. */}}
{{- define "lynx-relay.tenantsFile" -}}
{{- printf "%s/tenants.yaml" (include "lynx-relay.tenantsDir" .) }}
{{- end }}

{{/*
Where the ledger checkpoint's emptyDir is mounted (config.relay.ledgerCheckpoint), passed as
RELAY_LEDGER_CHECKPOINT_DIR.
*/}}
{{- define "lynx-relay.ledgerCheckpointDir" -}}
/var/lib/lynx-relay/ledger
{{- end }}

{{/* "true" when an autoscaler (HPA or KEDA) owns the replica count. */}}
{{- define "lynx-relay.autoscaled" -}}
{{- if or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/*
Checks across values that the JSON schema cannot express clearly (and, for HPA with KEDA, a
second line of defence for `helm template --skip-schema-validation`). Every workload template
includes this, so a bad combination fails the whole render with one clear message.
*/}}
{{- define "lynx-relay.validateValues" -}}
{{- $v := .Values }}
{{- if and $v.autoscaling.hpa.enabled $v.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are exclusive: KEDA manages its own HPA, and two autoscalers on one Deployment fight each other" }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (not (or $v.autoscaling.keda.kafka.enabled $v.autoscaling.keda.prometheus.enabled)) }}
{{- fail "autoscaling.keda.enabled needs at least one trigger: autoscaling.keda.kafka.enabled or autoscaling.keda.prometheus.enabled" }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.keda.prometheus.enabled (lt (int $v.autoscaling.keda.minReplicaCount) 1) }}
{{- fail "autoscaling.keda.prometheus needs autoscaling.keda.minReplicaCount >= 1: lynx_relay_consumer_lag_records comes from running relays, so from zero replicas nothing would ever scale up" }}
{{- end }}
{{- if include "lynx-relay.saslEnabled" . }}
{{- if not $v.config.kafka.sasl.mechanism }}
{{- fail (printf "config.kafka.sasl.mechanism is required with config.kafka.securityProtocol=%s" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if not $v.config.kafka.sasl.username }}
{{- fail (printf "config.kafka.sasl.username is required with config.kafka.securityProtocol=%s" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if not (or $v.secrets.existingSecret $v.secrets.kafkaSaslPassword) }}
{{- fail (printf "secrets.kafkaSaslPassword (or secrets.existingSecret) is required with config.kafka.securityProtocol=%s" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.keda.kafka.enabled (not $v.autoscaling.keda.kafka.authenticationRef) }}
{{- fail "autoscaling.keda.kafka.authenticationRef (a TriggerAuthentication with the SASL username and password) is required with a SASL security protocol" }}
{{- end }}
{{- end }}
{{- if and $v.config.kafka.tls.caSecret.name $v.config.kafka.tls.caConfigMap.name }}
{{- fail "config.kafka.tls.caSecret and config.kafka.tls.caConfigMap are exclusive: give the CA bundle once" }}
{{- end }}
{{- if ge (float64 $v.config.relay.shutdownGraceSeconds) (float64 $v.terminationGracePeriodSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.relay.shutdownGraceSeconds (%v): the relay needs that long to hand off after SIGTERM, and then time to commit and leave its group" $v.terminationGracePeriodSeconds $v.config.relay.shutdownGraceSeconds) }}
{{- end }}
{{- if le (float64 $v.config.relay.dedupeRetentionSeconds) (float64 $v.config.relay.jobTimeoutSeconds) }}
{{- fail "config.relay.dedupeRetentionSeconds must exceed config.relay.jobTimeoutSeconds: the ledger entry of a running job must outlive the job" }}
{{- end }}
{{- if gt (float64 $v.config.relay.pollMinIntervalSeconds) (float64 $v.config.relay.pollMaxIntervalSeconds) }}
{{- fail "config.relay.pollMinIntervalSeconds must not exceed config.relay.pollMaxIntervalSeconds" }}
{{- end }}
{{- if and $v.config.fal.deleteAfterCopy (not $v.config.output.url) }}
{{- fail "config.fal.deleteAfterCopy needs config.output.url: fal's files may only be deleted once they are copied" }}
{{- end }}
{{- end }}

{{/*
A number as the relay parses it: whole values without a fraction or an exponent (Helm holds
every number as a float64, which prints 6048000 as "6.048e+06"), others as they are.
*/}}
{{- define "lynx-relay.number" -}}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
The TCP ports of the object store (networkPolicy.output), as a comma-separated list:
networkPolicy.output.ports when given, else the port of config.output.endpointUrl (its own, or
443/80 by its scheme), else 443 (the cloud's store, over HTTPS).
*/}}
{{- define "lynx-relay.outputPorts" -}}
{{- $ports := .Values.networkPolicy.output.ports }}
{{- if $ports }}
{{- $out := list }}
{{- range $ports }}{{ $out = append $out (int64 . | toString) }}{{ end }}
{{- join "," $out }}
{{- else if .Values.config.output.endpointUrl }}
{{- $url := urlParse .Values.config.output.endpointUrl }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if eq $url.scheme "http" }}80{{ else }}443{{ end }}
{{- else -}}
443
{{- end }}
{{- end }}

{{/* Labels of the `helm test` pod; distinct from the relay's so Service and PDB ignore it. */}}
{{- define "lynx-relay.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "lynx-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/* The Service label whose value names the Prometheus job (ServiceMonitor jobLabel). */}}
{{- define "lynx-relay.jobLabelKey" -}}
lynx-relay/scrape-job
{{- end }}
