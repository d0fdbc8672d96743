{{- define "gdto.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gdto.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gdto.serviceAccountName" -}}
{{- default (include "gdto.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "gdto.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gdto.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gdto.labels" -}}
{{ include "gdto.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The rules of the operator's role, shared by the ClusterRole and the namespaced Roles. */}}
{{- define "gdto.rules" -}}
# Watch credentials; write only their status (server-side apply).
- apiGroups: [groupdocs.cloud]
  resources: [groupdocscredentials]
  verbs: [get, list, watch]
- apiGroups: [groupdocs.cloud]
  resources: [groupdocscredentials/status]
  verbs: [patch]
{{- if eq .Values.secretAccess "get" }}
# Secrets are read one by one (no list/watch); create and update (with a UID precondition)
# write token Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, update]
{{- else }}
# Label-selected watches of client Secrets and owned token Secrets; get tells a missing Secret
# from an unlabelled one; create and update (with a UID precondition) write token Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update]
{{- end }}
# Events on credentials.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- if .Values.rolloutRestarts.enabled }}
# spec.rolloutRestartTargets: a restart annotation on the pod template.
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, patch]
{{- end }}
{{- end -}}

{{/* Cluster RBAC mode only: ClusterGroupDocsCredentials, the namespaces they select, and the
removal of their copies from namespaces that stop matching. */}}
{{- define "gdto.clusterRules" -}}
# ClusterGroupDocsCredentials: watch them, write only their status.
- apiGroups: [groupdocs.cloud]
  resources: [clustergroupdocscredentials]
  verbs: [get, list, watch]
- apiGroups: [groupdocs.cloud]
  resources: [clustergroupdocscredentials/status]
  verbs: [patch]
# Namespace labels decide which namespaces a cluster credential serves.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
# A namespace that stops matching loses the copy (deleted with a UID precondition).
- apiGroups: [""]
  resources: [secrets]
  verbs: [delete]
{{- end -}}

{{/* "true" when ClusterGroupDocsCredentials are served: cluster RBAC, all namespaces, Secret
watches, and clusterCredentials.enabled; empty otherwise. */}}
{{- define "gdto.servesClusterCredentials" -}}
{{- if and .Values.clusterCredentials.enabled (eq .Values.rbac.scope "cluster") (not .Values.watchNamespaces) (ne .Values.secretAccess "get") -}}
true
{{- end -}}
{{- end -}}
