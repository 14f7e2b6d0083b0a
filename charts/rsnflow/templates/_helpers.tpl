{{/* Names and labels. */}}
{{- define "rsnflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rsnflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rsnflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rsnflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rsnflow
{{- end -}}

{{- define "rsnflow.selector" -}}
app.kubernetes.io/name: {{ include "rsnflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rsnflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rsnflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image: registry/repository:tag or @digest. */}}
{{- define "rsnflow.image" -}}
{{- $img := index .root.Values.image .which -}}
{{- if $img.digest -}}
{{- printf "%s/%s@%s" .root.Values.image.registry $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.image.registry $img.repository $img.tag -}}
{{- end -}}
{{- end -}}

{{- define "rsnflow.s3SecretName" -}}
{{- default (printf "%s-s3" (include "rsnflow.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}

{{- define "rsnflow.mlflowUrl" -}}
{{- printf "http://%s-mlflow.%s.svc.cluster.local:%d" (include "rsnflow.fullname" .) .Release.Namespace (int .Values.mlflow.port) -}}
{{- end -}}

{{/* S3 credentials and endpoint for boto3 (MLflow) and the minio SDK (rsnflow.storage). */}}
{{- define "rsnflow.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "rsnflow.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "rsnflow.s3SecretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ .Values.s3.endpoint | quote }}
- name: RSNFLOW_S3_ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
{{- end -}}

{{/* Writable scratch for a read-only root filesystem. */}}
{{- define "rsnflow.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}
