// Validates Kubernetes custom resources against their published schemas (the kubernetes-models
// packages, generated from KEDA's, the Prometheus Operator's and Argo Rollouts' CRDs). Reads a JSON array of
// resources on stdin; prints a JSON array with, for each, null (valid) or the validation error.
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = {
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((resource) => {
  const Model = MODELS[`${resource.apiVersion}/${resource.kind}`];
  if (!Model) return `no published schema here for ${resource.apiVersion} ${resource.kind}`;
  try {
    new Model(resource).validate();
    return null;
  } catch (error) {
    return error.message;
  }
});
console.log(JSON.stringify(results));
