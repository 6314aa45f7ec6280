{{/*
The chart name, or nameOverride.
*/}}
{{- define "elasticlm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name (with the
chart name added when the release name lacks it). Kept to 50 characters so that
"<fullname>-operator-metrics" stays a valid name.
*/}}
{{- define "elasticlm.fullname" -}}
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

{{/*
The operator's objects: Deployment, Service, (Cluster)Role and bindings.
*/}}
{{- define "elasticlm.operatorName" -}}
{{- printf "%s-operator" (include "elasticlm.fullname" .) }}
{{- end }}

{{- define "elasticlm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "elasticlm.labels" -}}
helm.sh/chart: {{ include "elasticlm.chart" . }}
app.kubernetes.io/name: {{ include "elasticlm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: elasticlm
{{- end }}

{{/*
Selector labels of the operator's pods.
*/}}
{{- define "elasticlm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "elasticlm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "elasticlm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "elasticlm.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag}; the tag defaults to the chart's appVersion.
*/}}
{{- define "elasticlm.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
The name of the Lease the replicas elect a leader with (in the release's namespace).
*/}}
{{- define "elasticlm.leaseName" -}}
elasticlm-operator
{{- end }}

{{/*
The `elasticlm operator` arguments of one kind of pod defaults (worker or server).
*/}}
{{- define "elasticlm.podDefaultArgs" -}}
{{- $kind := .kind }}
{{- with .defaults -}}
- {{ printf "--%s-image=%s" $kind (include "elasticlm.image" (dict "image" .image "root" $.root)) | quote }}
{{- if .imagePullPolicy }}
- {{ printf "--%s-image-pull-policy=%s" $kind .imagePullPolicy | quote }}
{{- end }}
{{- if .resources }}
- {{ printf "--%s-resources=%s" $kind (toJson .resources) | quote }}
{{- end }}
{{- if .podSecurityContext }}
- {{ printf "--%s-pod-security-context=%s" $kind (toJson .podSecurityContext) | quote }}
{{- end }}
{{- end }}
{{- end }}
