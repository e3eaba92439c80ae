{{/* The chart's name, or nameOverride. */}}
{{- define "openwebui-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: fullnameOverride, or release-chart unless the release name already holds the chart's. */}}
{{- define "openwebui-exporter.fullname" -}}
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

{{- define "openwebui-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openwebui-exporter.labels" -}}
helm.sh/chart: {{ include "openwebui-exporter.chart" . }}
{{ include "openwebui-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: openwebui-exporter
{{- end }}

{{- define "openwebui-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openwebui-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "openwebui-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openwebui-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "openwebui-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Open WebUI's URL: the value, or the official chart's Service (port 80) in this namespace. */}}
{{- define "openwebui-exporter.openwebuiURL" -}}
{{- .Values.openwebui.url | default (printf "http://open-webui.%s.svc:80" .Release.Namespace) }}
{{- end }}

{{/* The token Secret's name and key: the user's (existingSecret, by default <fullname>-token), or the one the chart creates from openwebui.token (<fullname>-token). */}}
{{- define "openwebui-exporter.tokenSecretName" -}}
{{- .Values.openwebui.existingSecret | default (printf "%s-token" (include "openwebui-exporter.fullname" .)) }}
{{- end }}
{{- define "openwebui-exporter.tokenSecretKey" -}}
{{- if .Values.openwebui.existingSecret }}{{ .Values.openwebui.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* "true" when the exporter serves KEDA's external-push gRPC protocol. */}}
{{- define "openwebui-exporter.push" -}}
{{- if and .Values.keda.enabled (eq .Values.keda.trigger "push") }}true{{ end }}
{{- end }}

{{/* "true" when the gRPC port uses TLS. */}}
{{- define "openwebui-exporter.grpcTLS" -}}
{{- if and (include "openwebui-exporter.push" .) .Values.keda.push.tls }}true{{ end }}
{{- end }}

{{/* "true" when server and KEDA client certificates are needed. */}}
{{- define "openwebui-exporter.tls" -}}
{{- if or (include "openwebui-exporter.grpcTLS" .) .Values.web.tls.enabled }}true{{ end }}
{{- end }}

{{/* "true" when KEDA's trigger talks to the exporter over HTTPS (metrics-api with web TLS). */}}
{{- define "openwebui-exporter.metricsApiTLS" -}}
{{- if and .Values.keda.enabled (eq .Values.keda.trigger "metrics-api") .Values.web.tls.enabled }}true{{ end }}
{{- end }}

{{/* "true" when KEDA presents a client certificate: push with TLS, or metrics-api over HTTPS. */}}
{{- define "openwebui-exporter.kedaClientCert" -}}
{{- if or (include "openwebui-exporter.grpcTLS" .) (include "openwebui-exporter.metricsApiTLS" .) }}true{{ end }}
{{- end }}

{{- define "openwebui-exporter.serverTLSSecret" -}}
{{- if .Values.tls.certManager.enabled }}{{ include "openwebui-exporter.fullname" . }}-server-tls{{ else }}{{ .Values.tls.existingSecret }}{{ end }}
{{- end }}
{{- define "openwebui-exporter.kedaClientTLSSecret" -}}
{{- if .Values.tls.certManager.enabled }}{{ include "openwebui-exporter.fullname" . }}-keda-client-tls{{ else }}{{ .Values.tls.kedaClientExistingSecret }}{{ end }}
{{- end }}

{{/* "true" when the exporter reads a web config file. */}}
{{- define "openwebui-exporter.webConfig" -}}
{{- if or .Values.web.basicAuth.enabled .Values.web.tls.enabled }}true{{ end }}
{{- end }}

{{/* "true" when the KEDA trigger needs a TriggerAuthentication of this chart. */}}
{{- define "openwebui-exporter.triggerAuth" -}}
{{- if .Values.keda.enabled }}
{{- if eq .Values.keda.trigger "metrics-api" }}
{{- if or .Values.web.basicAuth.enabled .Values.web.tls.enabled }}true{{ end }}
{{- else if eq .Values.keda.trigger "push" }}
{{- if .Values.keda.push.tls }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Who logs in to the exporter with basic auth: Prometheus, and KEDA only with the metrics-api trigger (with prometheus it asks Prometheus; push uses gRPC). */}}
{{- define "openwebui-exporter.basicAuthClients" -}}
{{- if and .Values.keda.enabled (eq .Values.keda.trigger "metrics-api") }}["keda","prometheus"]{{ else }}["prometheus"]{{ end }}
{{- end }}

{{- define "openwebui-exporter.replicas" -}}
{{- if not (kindIs "invalid" .Values.replicaCount) }}{{ .Values.replicaCount }}{{ else if include "openwebui-exporter.push" . }}2{{ else }}1{{ end }}
{{- end }}

{{- define "openwebui-exporter.pdb" -}}
{{- if not (kindIs "invalid" .Values.podDisruptionBudget.enabled) }}{{ if .Values.podDisruptionBudget.enabled }}true{{ end }}{{ else if include "openwebui-exporter.push" . }}true{{ end }}
{{- end }}

{{/* Refuses combinations that would install something that cannot work. */}}
{{- define "openwebui-exporter.validate" -}}
{{- $o := .Values.openwebui }}
{{- if and $o.existingSecret $o.token }}
{{- fail "openwebui: set either existingSecret or token, not both" }}
{{- end }}
{{- if and $o.token (not (hasPrefix "sk-" $o.token)) (not (regexMatch "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$" $o.token)) }}
{{- fail "openwebui.token: want an Open WebUI API key (sk-...) or a JWT" }}
{{- end }}
{{- if and $o.token (regexMatch "(?i)^sk-(0123456789abcdef|x+|\\.\\.\\.|changeme|your|placeholder)" $o.token) }}
{{- fail "openwebui.token: this is a placeholder, not a real API key" }}
{{- end }}
{{- if and .Values.activity.idleTimeout (ne $o.countMode "admin") }}
{{- fail "activity.idleTimeout needs openwebui.countMode=admin (and an admin account's API key): only Open WebUI's admin endpoints show who wrote a message" }}
{{- end }}
{{- if .Values.web.basicAuth.enabled }}
{{- range $who := include "openwebui-exporter.basicAuthClients" . | fromJsonArray }}
{{- $c := index $.Values.web.basicAuth $who }}
{{- if not $c.password }}
{{- fail (printf "web.basicAuth.%s.password: required with web.basicAuth.enabled" $who) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.web.basicAuth.keda.username .Values.web.basicAuth.prometheus.username) (eq (len (include "openwebui-exporter.basicAuthClients" . | fromJsonArray)) 2) }}
{{- fail "web.basicAuth: keda and prometheus need different usernames" }}
{{- end }}
{{- end }}
{{- if and (include "openwebui-exporter.tls" .) (not .Values.tls.certManager.enabled) }}
{{- if not .Values.tls.existingSecret }}
{{- fail "tls: without tls.certManager.enabled, set tls.existingSecret (the exporter's certificate: tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if and (include "openwebui-exporter.kedaClientCert" .) (not .Values.tls.kedaClientExistingSecret) }}
{{- fail "tls: without tls.certManager.enabled, set tls.kedaClientExistingSecret (KEDA's client certificate: tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled (eq .Values.keda.trigger "prometheus") (not .Values.keda.prometheus.serverAddress) }}
{{- fail "keda.prometheus.serverAddress: required with keda.trigger=prometheus" }}
{{- end }}
{{- if and .Values.keda.prometheus.authModes (not .Values.keda.prometheus.authenticationRef) }}
{{- fail "keda.prometheus.authModes needs keda.prometheus.authenticationRef (your TriggerAuthentication for Prometheus)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.web.tls.enabled .Values.serviceMonitor.namespace (ne .Values.serviceMonitor.namespace .Release.Namespace) }}
{{- fail "serviceMonitor.namespace: with web.tls.enabled the ServiceMonitor must be in the release namespace, where the CA Secret is" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "TOKEN" "API_URL" "CACHE_TIMEOUT" "PORT") }}
{{- fail (printf "extraEnv: %s is the old scaler's variable; use the chart's values (the token only as a mounted file)" .name) }}
{{- end }}
{{- end }}
{{- if eq (int .Values.keda.push.port) (int .Values.web.port) }}
{{- fail "keda.push.port and web.port must differ" }}
{{- end }}
{{- end }}
