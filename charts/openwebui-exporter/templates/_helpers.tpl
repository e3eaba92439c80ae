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

{{/* A name derived from the fullname: (list . "suffix") gives <fullname>-suffix, the fullname shortened (the way
Helm's own helpers do: trunc, then trimSuffix "-") so that the whole stays a 63-character DNS label. Every
object name and label value must fit, and cert-manager takes a commonName of at most 64 characters. */}}
{{- define "openwebui-exporter.suffixed" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "openwebui-exporter.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
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
{{- .Values.openwebui.existingSecret | default (include "openwebui-exporter.suffixed" (list . "token")) }}
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
{{- if .Values.tls.certManager.enabled }}{{ include "openwebui-exporter.suffixed" (list . "server-tls") }}{{ else }}{{ .Values.tls.existingSecret }}{{ end }}
{{- end }}
{{- define "openwebui-exporter.kedaClientTLSSecret" -}}
{{- if .Values.tls.certManager.enabled }}{{ include "openwebui-exporter.suffixed" (list . "keda-client-tls") }}{{ else }}{{ .Values.tls.kedaClientExistingSecret }}{{ end }}
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

{{/* Exporter replicas: replicaCount, else 2 where the exporter must not be a single point of failure (the push
trigger: KEDA's fallback does not cover an unreachable external scaler; the gate: it is in Open WebUI's data
path), else 1. */}}
{{- define "openwebui-exporter.replicas" -}}
{{- if not (kindIs "invalid" .Values.replicaCount) }}{{ .Values.replicaCount }}{{ else if or (include "openwebui-exporter.push" .) .Values.gate.enabled }}2{{ else }}1{{ end }}
{{- end }}

{{/* "true" when the PodDisruptionBudget is asked for: podDisruptionBudget.enabled, or by default with the push
trigger or the gate. */}}
{{- define "openwebui-exporter.pdbWanted" -}}
{{- if not (kindIs "invalid" .Values.podDisruptionBudget.enabled) }}{{ if .Values.podDisruptionBudget.enabled }}true{{ end }}{{ else if or (include "openwebui-exporter.push" .) .Values.gate.enabled }}true{{ end }}
{{- end }}

{{/* "true" when a PDB with minAvailable (an integer) could never let a pod go: it would block every node drain. */}}
{{- define "openwebui-exporter.pdbUnsatisfiable" -}}
{{- $min := .Values.podDisruptionBudget.minAvailable }}
{{- if and (not (kindIs "string" $min)) (ge (int $min) (int (include "openwebui-exporter.replicas" .))) }}true{{ end }}
{{- end }}

{{/* "true" when the PodDisruptionBudget is rendered: asked for by default and satisfiable (an explicit one that
is not satisfiable is refused in validate). */}}
{{- define "openwebui-exporter.pdb" -}}
{{- if and (include "openwebui-exporter.pdbWanted" .) (not (include "openwebui-exporter.pdbUnsatisfiable" .)) }}true{{ end }}
{{- end }}

{{/* A flag's name, without the dashes, the value and a kingpin "no-" negation: --no-x=1 and --x are both "x". */}}
{{- define "openwebui-exporter.flagName" -}}
{{- regexReplaceAll "^--(no-)?([^=]*).*$" . "${2}" }}
{{- end }}

{{/* The flags whose values the rest of the rendering depends on (ports, mounted files): extraArgs may not
override them, each names the value to set instead. */}}
{{- define "openwebui-exporter.wiredFlags" -}}
{{- dict
  "openwebui.token-file" "openwebui.existingSecret and openwebui.existingSecretKey"
  "openwebui.tls.ca-file" "openwebui.tlsCaSecret"
  "web.listen-address" "web.port"
  "web.config.file" "web.basicAuth and web.tls"
  "keda.listen-address" "keda.push.port"
  "keda.tls.cert-file" "keda.push.tls and the tls section"
  "keda.tls.key-file" "keda.push.tls and the tls section"
  "keda.tls.client-ca-file" "keda.push.tls and the tls section"
  "gate.listen-address" "gate.port"
  "gate.backend" "gate.backend or gate.backends"
  "gate.state-file" "nothing (the chart keeps it on an emptyDir)"
  "gate.peers" "nothing (the chart points it at its headless Service)"
  | toJson }}
{{- end }}

{{/* The flags KEDA's and Kubernetes' objects do not depend on: extraArgs replace these. */}}
{{- define "openwebui-exporter.args" -}}
{{- $args := list }}
{{- $args = append $args (printf "--openwebui.url=%s" (include "openwebui-exporter.openwebuiURL" .)) }}
{{- /* A mounted file, never an env var: re-read on every fetch, so a rotated Secret needs no restart (no subPath:
the kubelet updates it). */}}
{{- $args = append $args (printf "--openwebui.token-file=/etc/openwebui-exporter/token/%s" (include "openwebui-exporter.tokenSecretKey" .)) }}
{{- $args = append $args (printf "--openwebui.count-mode=%s" .Values.openwebui.countMode) }}
{{- with .Values.openwebui.timeout }}{{ $args = append $args (printf "--openwebui.timeout=%s" .) }}{{ end }}
{{- with .Values.openwebui.statusUpdateInterval }}{{ $args = append $args (printf "--openwebui.status-update-interval=%v" .) }}{{ end }}
{{- if .Values.openwebui.tlsCaSecret.name }}
{{- $args = append $args (printf "--openwebui.tls.ca-file=/etc/openwebui-exporter/openwebui-ca/%s" .Values.openwebui.tlsCaSecret.key) }}
{{- end }}
{{- with .Values.activity.idleTimeout }}{{ $args = append $args (printf "--activity.idle-timeout=%s" .) }}{{ end }}
{{- $args = append $args (printf "--web.listen-address=:%v" .Values.web.port) }}
{{- if include "openwebui-exporter.webConfig" . }}
{{- $args = append $args "--web.config.file=/etc/openwebui-exporter/web/web-config.yml" }}
{{- end }}
{{- $args = append $args (printf "--cache.ttl=%s" .Values.cache.ttl) }}
{{- $args = append $args (printf "--log.level=%s" .Values.log.level) }}
{{- $args = append $args (printf "--log.format=%s" .Values.log.format) }}
{{- if include "openwebui-exporter.push" . }}
{{- $args = append $args (printf "--keda.listen-address=:%v" .Values.keda.push.port) }}
{{- $args = append $args (printf "--keda.push-interval=%s" .Values.keda.push.interval) }}
{{- if include "openwebui-exporter.grpcTLS" . }}
{{- $args = append $args "--keda.tls.cert-file=/etc/openwebui-exporter/tls/tls.crt" }}
{{- $args = append $args "--keda.tls.key-file=/etc/openwebui-exporter/tls/tls.key" }}
{{- /* Mutual TLS: only KEDA's client certificate, signed by this CA, gets in. */}}
{{- $args = append $args "--keda.tls.client-ca-file=/etc/openwebui-exporter/tls/ca.crt" }}
{{- end }}
{{- end }}
{{- if .Values.gate.enabled }}
{{- $g := .Values.gate }}
{{- $args = append $args (printf "--gate.listen-address=:%v" $g.port) }}
{{- range include "openwebui-exporter.gateBackendFlags" . | fromJsonArray }}
{{- $args = append $args (printf "--gate.backend=%s" .) }}
{{- end }}
{{- with $g.holdTimeout }}{{ $args = append $args (printf "--gate.hold-timeout=%s" .) }}{{ end }}
{{- if not (kindIs "invalid" $g.maxHeld) }}{{ $args = append $args (printf "--gate.max-held=%v" (int $g.maxHeld)) }}{{ end }}
{{- with $g.maxHeldBytes }}{{ $args = append $args (printf "--gate.max-held-bytes=%s" .) }}{{ end }}
{{- /* The drain ends 10 s before the kubelet's SIGKILL: time to answer what is still held, then to stop. */}}
{{- $args = append $args (printf "--gate.drain-timeout=%ds" (sub (int $g.terminationGracePeriodSeconds) 10)) }}
{{- $args = append $args "--gate.state-file=/var/lib/openwebui-exporter/gate/state.json" }}
{{- if include "openwebui-exporter.gatePeers" . }}
{{- $args = append $args (printf "--gate.peers=%s" (include "openwebui-exporter.gatePeers" .)) }}
{{- end }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* The gate's backends as a list of dicts: gate.backends, or the one unnamed backend (name "", gate.backend, by
default the Ollama of Open WebUI's official chart in this namespace). */}}
{{- define "openwebui-exporter.gateBackends" -}}
{{- if .Values.gate.backends }}
{{- toJson .Values.gate.backends }}
{{- else }}
{{- toJson (list (dict "name" "" "url" (.Values.gate.backend | default (printf "http://open-webui-ollama.%s.svc:11434" .Release.Namespace)))) }}
{{- end }}
{{- end }}

{{/* The --gate.backend values: URL for the unnamed backend,
NAME=URL,wake=...[,idle=...][,parallel=...][,people=...][,bind=...][,warm=...][,max-loaded=...] for named ones, then NAME=URL for
each further replica of a pool. */}}
{{- define "openwebui-exporter.gateBackendFlags" -}}
{{- $out := list }}
{{- range include "openwebui-exporter.gateBackends" . | fromJsonArray }}
{{- if not .name }}
{{- $out = append $out .url }}
{{- else }}
{{- $v := printf "%s=%s,wake=%s" .name .url (.wake | default "arrival") }}
{{- with .idle }}{{ $v = printf "%s,idle=%s" $v . }}{{ end }}
{{- with .parallel }}{{ $v = printf "%s,parallel=%v" $v . }}{{ end }}
{{- with .people }}{{ $v = printf "%s,people=%v" $v . }}{{ end }}
{{- with .bind }}{{ $v = printf "%s,bind=%s" $v . }}{{ end }}
{{- with .warm }}{{ $v = printf "%s,warm=%s" $v . }}{{ end }}
{{- with .maxLoaded }}{{ $v = printf "%s,max-loaded=%v" $v . }}{{ end }}
{{- $out = append $out $v }}
{{- $name := .name }}
{{- range .replicas }}{{ $out = append $out (printf "%s=%s" $name .) }}{{ end }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* The gate's Service (what Open WebUI talks to) and the headless one its replicas find each other by. */}}
{{- define "openwebui-exporter.gateService" -}}
{{- include "openwebui-exporter.suffixed" (list . "gate") }}
{{- end }}
{{- define "openwebui-exporter.gatePeersService" -}}
{{- include "openwebui-exporter.suffixed" (list . "gate-peers") }}
{{- end }}

{{/* --gate.peers: the headless Service, when there is more than one replica to exchange demand with. */}}
{{- define "openwebui-exporter.gatePeers" -}}
{{- if and .Values.gate.enabled (gt (int (include "openwebui-exporter.replicas" .)) 1) }}
{{- printf "%s.%s.svc:%v" (include "openwebui-exporter.gatePeersService" .) .Release.Namespace .Values.gate.port }}
{{- end }}
{{- end }}

{{/* What Open WebUI's OLLAMA_BASE_URLS gets: the gate's Service, one URL per backend (its prefix). */}}
{{- define "openwebui-exporter.ollamaURLs" -}}
{{- $base := printf "http://%s.%s.svc:%v" (include "openwebui-exporter.gateService" .) .Release.Namespace .Values.gate.port }}
{{- $out := list }}
{{- range include "openwebui-exporter.gateBackends" . | fromJsonArray }}
{{- $out = append $out (ternary (printf "%s/%s" $base .name) $base (ne .name "")) }}
{{- end }}
{{- toJson $out }}
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
{{- if and $o.statusUpdateInterval (ne $o.countMode "admin") (not (regexMatch "^0+(\\.0*)?$|^(0+(\\.0*)?(ns|us|µs|ms|s|m|h))+$" (toString $o.statusUpdateInterval))) }}
{{- fail "openwebui.statusUpdateInterval above 0 needs openwebui.countMode=admin (and an admin account's API key): /api/usage only counts who was written within 180 s, and under the write throttle a person active a moment ago may have been written up to that interval before" }}
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
{{- include "openwebui-exporter.validateIssue19" . }}
{{- include "openwebui-exporter.validateGate" . }}
{{- end }}


{{/* Refusals for values that rendered objects the exporter or the cluster rejects. */}}
{{- define "openwebui-exporter.validateIssue19" -}}
{{- /* bcrypt reads at most 72 bytes: Sprig's bcrypt renders its error text as the "hash", and the exporter
exits at start. Bytes, not characters: the schema's maxLength counts characters. */}}
{{- if .Values.web.basicAuth.enabled }}
{{- range $who := include "openwebui-exporter.basicAuthClients" . | fromJsonArray }}
{{- $c := index $.Values.web.basicAuth $who }}
{{- if gt (len $c.password) 72 }}
{{- fail (printf "web.basicAuth.%s.password: %d bytes, but bcrypt (the web config's hash) takes at most 72: use a shorter one, e.g. openssl rand -base64 48 (64 characters)" $who (len $c.password)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (include "openwebui-exporter.pdbUnsatisfiable" .) }}
{{- fail (printf "podDisruptionBudget.minAvailable=%v with %s exporter replicas blocks every node drain: raise replicaCount, lower minAvailable, or set podDisruptionBudget.enabled=false" .Values.podDisruptionBudget.minAvailable (include "openwebui-exporter.replicas" .)) }}
{{- end }}
{{- $wired := include "openwebui-exporter.wiredFlags" . | fromJson }}
{{- $seen := dict }}
{{- range .Values.extraArgs }}
{{- $name := include "openwebui-exporter.flagName" . }}
{{- if hasKey $wired $name }}
{{- fail (printf "extraArgs: --%s is set by the chart, and other objects (ports, mounts, KEDA's trigger) depend on it: set %s instead" $name (index $wired $name)) }}
{{- end }}
{{- if hasKey $seen $name }}
{{- fail (printf "extraArgs: --%s is given twice: the exporter refuses a repeated flag" $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- end }}
{{- end }}

{{/* The gate's values: one form of backends, unique names, one ScaledObject per workload. */}}
{{- define "openwebui-exporter.validateGate" -}}
{{- $g := .Values.gate }}
{{- if and (not $g.enabled) (or $g.backend $g.backends) }}
{{- fail "gate.backend and gate.backends need gate.enabled=true" }}
{{- end }}
{{- if $g.enabled }}
{{- if and $g.backend $g.backends }}
{{- fail "gate: set either gate.backend (one Ollama, served at /) or gate.backends (named, served under /NAME/), not both" }}
{{- end }}
{{- if has (int $g.port) (list (int .Values.web.port) (int .Values.keda.push.port)) }}
{{- fail "gate.port must differ from web.port and keda.push.port" }}
{{- end }}
{{- $names := dict }}
{{- $targets := dict }}
{{- range $i, $b := $g.backends }}
{{- if hasKey $names $b.name }}
{{- fail (printf "gate.backends[%d]: name %q is used twice: each backend gets the prefix /NAME/ and a ScaledObject of its own" $i $b.name) }}
{{- end }}
{{- $_ := set $names $b.name true }}
{{- if and $b.idle (ne ($b.wake | default "arrival") "request") }}
{{- fail (printf "gate.backends[%d] (%s): idle applies only to wake: request (an arrival backend follows the people in Open WebUI)" $i $b.name) }}
{{- end }}
{{- if $.Values.keda.enabled }}
{{- if not (and $b.scaleTargetRef $b.scaleTargetRef.name) }}
{{- fail (printf "gate.backends[%d] (%s): scaleTargetRef.name is required with keda.enabled (the Deployment this backend's ScaledObject scales)" $i $b.name) }}
{{- end }}
{{- $t := printf "%s/%s" ($b.scaleTargetRef.kind | default "Deployment") $b.scaleTargetRef.name }}
{{- if hasKey $targets $t }}
{{- fail (printf "gate.backends[%d] (%s): scaleTargetRef %s is also %s's: KEDA allows one ScaledObject per workload" $i $b.name $t (index $targets $t)) }}
{{- end }}
{{- $_ := set $targets $t $b.name }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
