{{- define "lanyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lanyard.fullname" -}}
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

{{- define "lanyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lanyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lanyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lanyard.labels" -}}
helm.sh/chart: {{ include "lanyard.chart" . }}
{{ include "lanyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lanyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lanyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding config.yaml: the user's or the chart's. */}}
{{- define "lanyard.configSecretName" -}}
{{- if .Values.existingConfigSecret }}
{{- .Values.existingConfigSecret }}
{{- else }}
{{- printf "%s-config" (include "lanyard.fullname" .) }}
{{- end }}
{{- end }}

{{/* The rendered config.yaml; fails early on what lanyard would reject at start-up anyway. */}}
{{- define "lanyard.config" -}}
{{- if not .Values.config.issuer }}
{{- fail "config.issuer is required: the issuer URL clients and kube-apiserver see (e.g. https://login.example.com)" }}
{{- end }}
{{- toYaml .Values.config }}
{{- end }}

{{/* Where the key-encryption key comes from; exactly one source. */}}
{{- define "lanyard.encryptionKeySecretName" -}}
{{- if and .Values.encryptionKey.existingSecret .Values.encryptionKey.value }}
{{- fail "set only one of encryptionKey.existingSecret and encryptionKey.value" }}
{{- else if .Values.encryptionKey.existingSecret }}
{{- .Values.encryptionKey.existingSecret }}
{{- else if .Values.encryptionKey.value }}
{{- printf "%s-encryption-key" (include "lanyard.fullname" .) }}
{{- else }}
{{- fail "encryptionKey.existingSecret (recommended) or encryptionKey.value is required: the key-encryption key for the signing keys, 32 bytes base64 (openssl rand -base64 32)" }}
{{- end }}
{{- end }}

{{- define "lanyard.encryptionKeySecretKey" -}}
{{- if .Values.encryptionKey.existingSecret }}
{{- .Values.encryptionKey.key }}
{{- else }}
{{- "encryption-key" }}
{{- end }}
{{- end }}

{{/* Whether the chart sets POSTGRES_PASSWORD from postgres.existingSecret ("true" or ""); fails
when the config needs the variable and nothing provides it, or when two things would. */}}
{{- define "lanyard.postgresPasswordSecret" -}}
{{- $fromEnv := false }}
{{- range .Values.env }}
{{- if eq .name "POSTGRES_PASSWORD" }}{{ $fromEnv = true }}{{ end }}
{{- end }}
{{- if and .Values.postgres.existingSecret $fromEnv }}
{{- fail "set only one of postgres.existingSecret and an `env` entry named POSTGRES_PASSWORD" }}
{{- else if .Values.postgres.existingSecret }}
{{- "true" }}
{{- else if and (not .Values.existingConfigSecret) (not $fromEnv) (not .Values.envFrom) (eq (dig "storage" "type" "" .Values.config) "postgres") (regexMatch "\\$\\{?POSTGRES_PASSWORD\\b" (toYaml .Values.config)) }}
{{- fail "postgres.existingSecret is required: the Secret holding the PostgreSQL password (key postgres.passwordKey, default `password`), which the config reads as $POSTGRES_PASSWORD" }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds, checked against the preStop delay plus lanyard's own 20 s
for in-flight requests after SIGTERM. */}}
{{- define "lanyard.terminationGracePeriod" -}}
{{- $needed := add (int .Values.preStopDelaySeconds) 20 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds must be at least %d: preStopDelaySeconds (%d) plus the 20 seconds lanyard gives in-flight requests after SIGTERM" $needed (int .Values.preStopDelaySeconds)) }}
{{- end }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
