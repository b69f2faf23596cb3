{{/* The chart name, or nameOverride. */}}
{{- define "noti.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name when it already
contains the chart name, else "<release>-<chart>". Truncated so "-<component>" suffixes fit
Kubernetes' 63-character names.
*/}}
{{- define "noti.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "noti.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "ctx" $ "component" "gateway"). */}}
{{- define "noti.labels" -}}
helm.sh/chart: {{ include "noti.chart" .ctx }}
{{ include "noti.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: noti
{{- end }}

{{/* The labels a component's selector matches; pass (dict "ctx" $ "component" "gateway"). */}}
{{- define "noti.selectorLabels" -}}
app.kubernetes.io/name: {{ include "noti.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "noti.gateway.fullname" -}}
{{ include "noti.fullname" . }}-gateway
{{- end }}

{{- define "noti.operator.fullname" -}}
{{ include "noti.fullname" . }}-operator
{{- end }}

{{- define "noti.operator.serviceAccountName" -}}
{{ default (include "noti.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{/*
Cluster-scoped RBAC names carry the release namespace: the same release name installed in two
namespaces must not fight over one ClusterRole.
*/}}
{{- define "noti.operator.clusterRoleName" -}}
{{ .Release.Namespace }}-{{ include "noti.operator.fullname" . }}
{{- end }}

{{/* The chart's image, repository:tag. */}}
{{- define "noti.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The senders' image: operator.senderImage, its empty fields taken from image. */}}
{{- define "noti.senderImage" -}}
{{- $sender := .Values.operator.senderImage }}
{{- default .Values.image.repository $sender.repository }}:{{ default (default .Chart.AppVersion .Values.image.tag) $sender.tag }}
{{- end }}

{{/*
The Secret every component takes its environment from: existingSecret, or the chart's own.
Rendering fails here, with what to set, when neither names the database or Redis.
*/}}
{{- define "noti.connectionsSecretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- $_ := required "noti: set database.url (e.g. postgresql+psycopg://user:pass@host:5432/noti) or existingSecret (a Secret holding NOTI_DATABASE_URL and NOTI_REDIS_URL)" .Values.database.url }}
{{- $_ := required "noti: set redis.url (e.g. redis://host:6379/0) or existingSecret (a Secret holding NOTI_DATABASE_URL and NOTI_REDIS_URL)" .Values.redis.url }}
{{- include "noti.fullname" . }}-connections
{{- end }}
{{- end }}

{{/* The Secret senders take their environment from: the database and Redis URLs only. */}}
{{- define "noti.senderSecretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "noti.fullname" . }}-senders
{{- end }}
{{- end }}

{{/* The operator's watched namespaces as a list; anything but a list fails with how to write one. */}}
{{- define "noti.watchNamespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces | default list }}
{{- if not (kindIs "slice" $namespaces) }}
{{- fail (printf "noti: operator.watchNamespaces must be a list (e.g. --set 'operator.watchNamespaces={team-a,team-b}'), not %q" (toString $namespaces)) }}
{{- end }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/*
A pod's annotations: the component's podAnnotations, plus a checksum of the chart's connection
settings so pods roll when they change. A generated session secret is not part of it: it is
created once and never changes. Pass (dict "ctx" $ "annotations" .Values.<component>.podAnnotations).
*/}}
{{- define "noti.podAnnotations" -}}
{{- $annotations := deepCopy (.annotations | default dict) }}
{{- $values := .ctx.Values }}
{{- if not $values.existingSecret }}
{{- $_ := set $annotations "checksum/connections" (list $values.database.url $values.redis.url $values.gateway.sessionSecret | toJson | sha256sum) }}
{{- end }}
{{- with $annotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
What every pod shares: pull secrets, security context, no service links. Kubernetes would
otherwise inject NOTI_GATEWAY_PORT=tcp://... for the <release>-gateway Service into every pod of
the namespace, which the NOTI_* settings would read as the gateway's port.
*/}}
{{- define "noti.podCommon" -}}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Scheduling of one component: node selection, tolerations, affinity, priority and spread. Spread
constraints without a labelSelector get the component's. Pass (dict "ctx" $ "values" <its values>
"component" "gateway").
*/}}
{{- define "noti.scheduling" -}}
{{- $values := .values }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.topologySpreadConstraints }}
{{- $selector := include "noti.selectorLabels" (dict "ctx" $.ctx "component" $.component) | fromYaml }}
{{- $constraints := list }}
{{- range . }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/* The gateway's replica floor: the autoscaler's minimum when it runs, else replicas. */}}
{{- define "noti.gateway.minReplicas" -}}
{{- if .Values.gateway.autoscaling.enabled }}{{ .Values.gateway.autoscaling.minReplicas }}{{ else }}{{ .Values.gateway.replicas }}{{ end }}
{{- end }}

{{/* Namespaces holding sender pods: the watched ones, else the release namespace (JSON list). */}}
{{- define "noti.senderNamespaces" -}}
{{- $namespaces := include "noti.watchNamespaces" . | fromJsonArray }}
{{- toJson (append $namespaces .Release.Namespace | uniq) }}
{{- end }}

{{/* The selector of every sender pod the operator creates (operator/deployment.py labels them). */}}
{{- define "noti.senderSelectorLabels" -}}
app.kubernetes.io/name: noti
app.kubernetes.io/component: sender
app.kubernetes.io/managed-by: noti-operator
{{- end }}
