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
