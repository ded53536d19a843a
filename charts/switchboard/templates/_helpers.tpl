{{/*
Names, labels and checks shared by the templates. Object names the operator itself relies on
(its ClusterRole, Role, Lease, and the NAME-* objects it creates) follow docs/operator.md.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart name>, or <release> when it already holds the chart name; fullnameOverride wins. */}}
{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart renders. */}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{/* Selector labels of the chart's own pods; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The operator's name (Deployment, ServiceAccount, ClusterRole/Role, bindings, Lease). */}}
{{- define "switchboard.operatorName" -}}
{{- .Values.operator.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Switchboard resource's name: NAME in docs/operator.md. */}}
{{- define "switchboard.switchboardName" -}}
{{- default (include "switchboard.fullname" .) .Values.switchboard.name }}
{{- end }}

{{/* Labels the operator puts on a Switchboard's pods (docs/operator.md); add the component. */}}
{{- define "switchboard.switchboardPodLabels" -}}
app.kubernetes.io/name: switchboard
app.kubernetes.io/instance: {{ include "switchboard.switchboardName" . }}
{{- end }}

{{/* The switchboard image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "switchboard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/*
Namespaces where the operator may read Secrets (spec.redis.secretRef), as a JSON list:
operator.secretNamespaces, or when unset the namespace its Switchboards are in (watchNamespace,
else the release namespace). [] grants none.
*/}}
{{- define "switchboard.secretNamespaces" -}}
{{- $ns := .Values.operator.secretNamespaces }}
{{- if kindIs "invalid" $ns }}
{{- $ns = list (default .Release.Namespace .Values.operator.watchNamespace) }}
{{- end }}
{{- $ns | uniq | toJson }}
{{- end }}

{{- define "switchboard.redisName" -}}
{{- printf "%s-redis" (include "switchboard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the embedded Redis is rendered: only for the chart's own Switchboard. */}}
{{- define "switchboard.embeddedRedis" -}}
{{- if and .Values.switchboard.enabled .Values.redis.embedded.enabled }}true{{ end }}
{{- end }}

{{/*
"true" when the Switchboard's pods get an AUTH_SECRET: a switchboard.env entry with a value or
valueFrom (a Secret). Without it the gateway runs in development mode and trusts hello.user as
given. switchboard.config cannot hold it (plain text: see switchboard.validate).
*/}}
{{- define "switchboard.authSecretSet" -}}
{{- $set := false }}
{{- range .Values.switchboard.env }}
{{- if and (eq .name "AUTH_SECRET") (or .value .valueFrom) }}{{ $set = true }}{{ end }}
{{- end }}
{{- if $set }}true{{ end }}
{{- end }}

{{/* The gateway Service is reachable from outside the cluster: NodePort or LoadBalancer. */}}
{{- define "switchboard.gatewayExposed" -}}
{{- if has (default "ClusterIP" .Values.switchboard.gateway.service.type) (list "NodePort" "LoadBalancer") }}true{{ end }}
{{- end }}

{{/*
Pod and container security settings shared by the chart's switchboard pods (the same ones the
operator gives the pods it creates).
*/}}
{{- define "switchboard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "switchboard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
Checks the JSON schema cannot express, with messages that say what to change. Included by
templates/validate.yaml, so both `helm install` and `helm template` run them.
*/}}
{{- define "switchboard.validate" -}}
{{- $v := .Values }}
{{- if $v.switchboard.enabled }}
  {{- $sources := list }}
  {{- if $v.redis.url }}{{ $sources = append $sources "redis.url" }}{{ end }}
  {{- if $v.redis.existingSecret.name }}{{ $sources = append $sources "redis.existingSecret.name" }}{{ end }}
  {{- if $v.redis.embedded.enabled }}{{ $sources = append $sources "redis.embedded.enabled" }}{{ end }}
  {{- if eq (len $sources) 0 }}
    {{- fail "redis: the Switchboard needs a Redis: set exactly one of redis.url, redis.existingSecret.name and redis.embedded.enabled (none is set)" }}
  {{- else if gt (len $sources) 1 }}
    {{- $hint := "" }}
    {{- if $v.redis.embedded.enabled }}{{ $hint = "; redis.embedded.enabled is true by default: to use your own Redis add --set redis.embedded.enabled=false" }}{{ end }}
    {{- fail (printf "redis: set exactly one of redis.url, redis.existingSecret.name and redis.embedded.enabled (%s are set)%s" (join ", " $sources) $hint) }}
  {{- end }}
  {{- if and $v.operator.watchNamespace (ne $v.operator.watchNamespace .Release.Namespace) }}
    {{- fail (printf "operator.watchNamespace is %q but the chart's Switchboard goes into the release namespace %q, which that operator would not watch: install the release into %q, or set switchboard.enabled=false and create Switchboards in %q yourself" $v.operator.watchNamespace .Release.Namespace $v.operator.watchNamespace $v.operator.watchNamespace) }}
  {{- end }}
  {{- $gw := $v.switchboard.gateway }}
  {{- if and (hasKey $gw "minReplicas") (hasKey $gw "maxReplicas") (gt (int $gw.minReplicas) (int $gw.maxReplicas)) }}
    {{- fail (printf "switchboard.gateway.minReplicas (%v) must be less than or equal to switchboard.gateway.maxReplicas (%v)" $gw.minReplicas $gw.maxReplicas) }}
  {{- end }}
  {{- if and $gw.service $gw.service.nodePort (eq (default "ClusterIP" $gw.service.type) "ClusterIP") }}
    {{- fail "switchboard.gateway.service.nodePort needs switchboard.gateway.service.type NodePort or LoadBalancer" }}
  {{- end }}
  {{- range $key := list "AUTH_SECRET" "API_KEY" "REDIS_URL" }}
    {{- if hasKey (default dict $v.switchboard.config) $key }}
      {{- fail (printf "switchboard.config.%s: config goes into a plain-text ConfigMap (and the Switchboard CRD refuses it there). Put AUTH_SECRET and API_KEY in switchboard.env with valueFrom.secretKeyRef, and the Redis URL in redis.existingSecret" $key) }}
    {{- end }}
  {{- end }}
  {{- if and (include "switchboard.gatewayExposed" .) (not (include "switchboard.authSecretSet" .)) (not $v.switchboard.allowUnauthenticated) }}
    {{- fail (printf "switchboard.gateway.service.type is %s, which exposes the gateway outside the cluster, but no AUTH_SECRET is set: the gateway would run in development mode and trust hello.user as given, so any client could act as any user. Give it a secret, e.g. switchboard.env=[{name: AUTH_SECRET, valueFrom: {secretKeyRef: {name: switchboard-auth, key: secret}}}], or, to expose it without authentication anyway, set switchboard.allowUnauthenticated=true" $gw.service.type) }}
  {{- end }}
  {{- $bc := $v.switchboard.broadcast }}
  {{- if and (hasKey $bc "minReplicas") (hasKey $bc "maxReplicas") (gt (int $bc.minReplicas) (int $bc.maxReplicas)) }}
    {{- fail (printf "switchboard.broadcast.minReplicas (%v) must be less than or equal to switchboard.broadcast.maxReplicas (%v)" $bc.minReplicas $bc.maxReplicas) }}
  {{- end }}
  {{- if and (hasKey $bc "maxReplicas") (hasKey $bc "shards") (gt (int $bc.maxReplicas) (int $bc.shards)) }}
    {{- fail (printf "switchboard.broadcast.maxReplicas (%v) must not exceed switchboard.broadcast.shards (%v): a replica without a shard has nothing to do" $bc.maxReplicas $bc.shards) }}
  {{- end }}
  {{- if $v.podDisruptionBudget.enabled }}
    {{- $pdb := $v.podDisruptionBudget }}
    {{- $max := and (hasKey $pdb "maxUnavailable") (not (kindIs "invalid" $pdb.maxUnavailable)) }}
    {{- $min := and (hasKey $pdb "minAvailable") (not (kindIs "invalid" $pdb.minAvailable)) }}
    {{- if and $max $min }}
      {{- fail "podDisruptionBudget: set one of maxUnavailable and minAvailable, not both (maxUnavailable is 1 by default: to set minAvailable, add --set podDisruptionBudget.maxUnavailable=null)" }}
    {{- else if not (or $max $min) }}
      {{- fail "podDisruptionBudget: set one of maxUnavailable and minAvailable, or podDisruptionBudget.enabled=false" }}
    {{- end }}
  {{- end }}
{{- end }}
{{- if and (not $v.operator.leaderElection) (gt (int $v.operator.replicas) 1) }}
  {{- fail (printf "operator.replicas is %v but operator.leaderElection is off: without a leader every replica would act; set operator.replicas=1 or turn leader election on" $v.operator.replicas) }}
{{- end }}
{{- end }}

{{/*
ServiceMonitor relabelings giving every target the `namespace` and `pod` labels the operator's
queries and the alert rules select on (docs/operator.md, "Metrics it reads").
*/}}
{{- define "switchboard.podRelabelings" -}}
- sourceLabels: [__meta_kubernetes_namespace]
  targetLabel: namespace
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
{{- end }}
