{{/*
The chart's name: the value of the `app` label every selector uses.
*/}}
{{- define "chatbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name when it already contains the chart name (`chatbot`,
`chatbot-canary`), else `<release>-<chart>`.
*/}}
{{- define "chatbot.fullname" -}}
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
Selector labels: `app` (as in the Kustomize base; selectors are immutable, so the release and
version stay out of them) and `track` when this release is one track of a canary.
*/}}
{{- define "chatbot.selectorLabels" -}}
app: {{ include "chatbot.name" . }}
{{- with .Values.track }}
track: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Labels on every object: the selector labels plus the recommended app.kubernetes.io set.
*/}}
{{- define "chatbot.labels" -}}
{{ include "chatbot.selectorLabels" . }}
app.kubernetes.io/name: {{ include "chatbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: podcycle-examples
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image reference: `repository@digest` when a digest is set (the production way), else
`repository:tag`. Arguments: a dict with `image` (repository, tag, digest) and `tag` (fallback).
*/}}
{{- define "chatbot.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .tag .image.tag)) -}}
{{- end -}}
{{- end }}

{{/*
terminationGracePeriodSeconds: preStop + shutdownDelay + drainTimeout + hookTimeout + margin,
or the user's value when it fits that sum. A grace period that cannot hold the shutdown is
refused here, at `helm template`, rather than by podcycle on the first pod (exit 1) or, worse,
by a SIGKILL in the middle of a drain.
*/}}
{{- define "chatbot.gracePeriod" -}}
{{- $p := .Values.podcycle -}}
{{- $sum := add $p.preStop $p.shutdownDelay $p.drainTimeout $p.hookTimeout $p.margin -}}
{{- if kindIs "invalid" $p.terminationGracePeriodSeconds -}}
{{- $sum -}}
{{- else if lt (int $p.terminationGracePeriodSeconds) (int $sum) -}}
{{- fail (printf "podcycle.terminationGracePeriodSeconds %d cannot hold the shutdown budget: podcycle.preStop %d + podcycle.shutdownDelay %d + podcycle.drainTimeout %d + podcycle.hookTimeout %d + podcycle.margin %d = %d s. Raise podcycle.terminationGracePeriodSeconds to at least %d, lower those values, or leave it null to have the chart compute it" (int $p.terminationGracePeriodSeconds) (int $p.preStop) (int $p.shutdownDelay) (int $p.drainTimeout) (int $p.hookTimeout) (int $p.margin) (int $sum) (int $sum)) -}}
{{- else -}}
{{- int $p.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end }}

{{/*
Checks across values that a JSON schema cannot express; each fails naming the values.
*/}}
{{- define "chatbot.checks" -}}
{{- $p := .Values.podcycle -}}
{{- $startup := .Values.probes.startup -}}
{{- $budget := mul $startup.periodSeconds $startup.failureThreshold -}}
{{- if ge (int $p.warmupTimeout) (int $budget) -}}
{{- fail (printf "podcycle.warmupTimeout %d must be below the startup probe's budget, probes.startup.periodSeconds %d x probes.startup.failureThreshold %d = %d s, so that podcycle reports a stuck warm-up (exit code 3) before the kubelet kills it" (int $p.warmupTimeout) (int $startup.periodSeconds) (int $startup.failureThreshold) (int $budget)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.pdb.enabled (lt (int .Values.autoscaling.minReplicas) 2) -}}
{{- fail (printf "autoscaling.minReplicas %d with pdb.enabled: a node drain would evict the only pod; use 2 or more" (int .Values.autoscaling.minReplicas)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.strategy.type "BlueGreen") -}}
{{- fail "autoscaling.enabled with strategy.type BlueGreen: one HPA cannot scale two slots; scale the slots with blueGreen.slots.<slot>.replicas" -}}
{{- end -}}
{{- if and (eq .Values.strategy.type "BlueGreen") (not (hasKey .Values.blueGreen.slots .Values.blueGreen.live)) -}}
{{- fail (printf "blueGreen.live %q is not one of blueGreen.slots (%s)" .Values.blueGreen.live (keys .Values.blueGreen.slots | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end }}

{{/*
The workloads this release renders, as a YAML list: one per blue/green slot, else one.
Each: suffix (appended to the full name), labels (added to pods and selectors), tag, version,
replicas.
*/}}
{{- define "chatbot.workloads" -}}
{{- $tag := toString (default .Chart.AppVersion .Values.image.tag) -}}
{{- if eq .Values.strategy.type "BlueGreen" -}}
{{- range $slot, $s := .Values.blueGreen.slots }}
- suffix: {{ printf "-%s" $slot | quote }}
  labels:
    slot: {{ $slot | quote }}
  tag: {{ toString $s.tag | quote }}
  version: {{ toString (default $s.tag $s.version) | quote }}
  replicas: {{ $s.replicas }}
{{- end }}
{{- else }}
- suffix: ""
  labels: {}
  tag: {{ $tag | quote }}
  version: {{ toString (default $tag .Values.version) | quote }}
  replicas: {{ .Values.replicaCount }}
{{- end }}
{{- end }}
