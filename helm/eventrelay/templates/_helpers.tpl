{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "eventrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name alone when it already
contains the chart name. Truncated to 63 characters.
*/}}
{{- define "eventrelay.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "eventrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource of the server component.
*/}}
{{- define "eventrelay.labels" -}}
{{ include "eventrelay.baseLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Labels shared by all components (the migration job adds its own component label).
*/}}
{{- define "eventrelay.baseLabels" -}}
helm.sh/chart: {{ include "eventrelay.chart" . }}
app.kubernetes.io/name: {{ include "eventrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventrelay
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "eventrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Name of the ServiceAccount the pods use.
*/}}
{{- define "eventrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventrelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding DATABASE_URL, REDIS_URL and ER_JWT_SECRET.
*/}}
{{- define "eventrelay.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "eventrelay.fullname" . }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "eventrelay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: given, or preStop sleep + drain grace + 10 s of margin.
Fails when a given value leaves no room for the preStop sleep and the drain.
*/}}
{{- define "eventrelay.terminationGracePeriodSeconds" -}}
{{- $sleep := int .Values.preStop.sleepSeconds }}
{{- $grace := int .Values.config.shutdownGraceSeconds }}
{{- $needed := add $sleep $grace }}
{{- if and (ne (toString .Values.terminationGracePeriodSeconds) "") (ne (toString .Values.terminationGracePeriodSeconds) "<nil>") }}
{{- $given := int .Values.terminationGracePeriodSeconds }}
{{- if le $given $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStop.sleepSeconds + config.shutdownGraceSeconds (%d), or in-flight work is killed mid-drain" $given $needed) }}
{{- end }}
{{- $given }}
{{- else }}
{{- add $needed 10 }}
{{- end }}
{{- end }}

{{/*
Environment shared by the node and the migration job: non-secret settings and secrets.
*/}}
{{- define "eventrelay.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "eventrelay.secretName" . }}
      key: {{ .Values.secret.keys.databaseUrl }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "eventrelay.secretName" . }}
      key: {{ .Values.secret.keys.redisUrl }}
      optional: true
- name: ER_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "eventrelay.secretName" . }}
      key: {{ .Values.secret.keys.jwtSecret }}
- name: ER_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: ER_GRPC_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.service.grpcPort) | quote }}
- name: ER_HTTP_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.service.httpPort) | quote }}
- name: ER_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.service.metricsPort) | quote }}
- name: ER_CLUSTER_NAME
  value: {{ .Values.config.clusterName | quote }}
- name: ER_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.config.rustLog | quote }}
- name: ER_MAX_EVENT_BYTES
  value: {{ .Values.config.maxEventBytes | int64 | quote }}
- name: ER_MAX_EVENTS_PER_REQUEST
  value: {{ .Values.config.maxEventsPerRequest | int64 | quote }}
- name: ER_DB_POOL_SIZE
  value: {{ .Values.config.dbPoolSize | int64 | quote }}
- name: ER_SHUTDOWN_GRACE_SECONDS
  value: {{ .Values.config.shutdownGraceSeconds | int64 | quote }}
{{- with .Values.config.otlpEndpoint }}
- name: ER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.webhookAllowedNetworks }}
- name: ER_WEBHOOK_ALLOWED_NETWORKS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.keepaliveSeconds }}
- name: ER_KEEPALIVE_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.wsIdleTimeoutSeconds }}
- name: ER_WS_IDLE_TIMEOUT_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.drainSpreadSeconds }}
- name: ER_DRAIN_SPREAD_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.wsMaxConnectionAgeSeconds }}
- name: ER_WS_MAX_CONNECTION_AGE_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.grpcMaxConnectionAgeSeconds }}
- name: ER_GRPC_MAX_CONNECTION_AGE_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.grpcMaxConnectionAgeGraceSeconds }}
- name: ER_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.dedupeWindowSeconds }}
- name: ER_DEDUPE_WINDOW_SECONDS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.maxConnectionsPerAddress }}
- name: ER_MAX_CONNECTIONS_PER_ADDRESS
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.config.trustedProxies }}
- name: ER_TRUSTED_PROXIES
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
