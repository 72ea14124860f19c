{{/* Names and labels shared by every object of the release. */}}

{{- define "tas.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tas.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: api, scheduler, worker-gpu, worker-cpu. */}}
{{- define "tas.selector" -}}
app.kubernetes.io/name: {{ include "tas.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tas.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tas.authSecret" -}}
{{- default (printf "%s-auth" (include "tas.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "tas.urlsSecret" -}}
{{- default (printf "%s-urls" (include "tas.fullname" .)) .Values.existingUrlsSecret -}}
{{- end -}}

{{- define "tas.dataClaim" -}}
{{- default (printf "%s-data" (include "tas.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* The API's URL inside the cluster: where workers join. */}}
{{- define "tas.apiUrl" -}}
{{- printf "http://%s-api:%d" (include "tas.fullname" .) (int .Values.api.service.httpPort) -}}
{{- end -}}

{{/* Environment every tas container gets: the database, Redis, keys. */}}
{{- define "tas.commonEnv" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "tas.urlsSecret" . }}, key: DATABASE_URL } }
- name: REDIS_URL
  valueFrom: { secretKeyRef: { name: {{ include "tas.urlsSecret" . }}, key: REDIS_URL } }
- name: TAS_AUTH
  value: "on"
- name: TAS_WORKER_TOKEN
  valueFrom: { secretKeyRef: { name: {{ include "tas.authSecret" . }}, key: worker-token } }
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Mutual TLS files, when a Secret is given. */}}
{{- define "tas.tlsEnv" -}}
{{- if .Values.tls.existingSecret }}
- name: TAS_TLS_CERT
  value: /tls/tls.crt
- name: TAS_TLS_KEY
  value: /tls/tls.key
- name: TAS_TLS_CA
  value: /tls/ca.crt
{{- end }}
{{- end -}}
