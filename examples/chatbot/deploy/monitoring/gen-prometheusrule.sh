#!/bin/sh
# Regenerates prometheusrule.yaml (the Prometheus Operator's PrometheusRule)
# from rules.yml, so the two carry the same groups. Run it after every edit
# of rules.yml; .ci/check-rules fails when they differ.
#
#   ./gen-prometheusrule.sh            rewrite prometheusrule.yaml
#   ./gen-prometheusrule.sh --stdout   print it instead
#
# The PrometheusRule's spec is the rule file itself: everything from the
# `groups:` line on, indented by two spaces (comments included).
set -eu
dir=$(dirname "$0")

generate() {
	cat <<'HEADER'
# GENERATED from rules.yml by gen-prometheusrule.sh: edit rules.yml, then run
# the script. The groups are documented in rules.yml.
#
# The Prometheus Operator loads only the PrometheusRules its Prometheus
# resource's ruleSelector (and ruleNamespaceSelector) matches. Check yours:
#   kubectl get prometheus -A -o jsonpath='{.items[*].spec.ruleSelector}'
# kube-prometheus-stack, for one, selects `release: <helm release name>`
# unless installed with prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false;
# add that label here (or with a kustomize `labels:` entry) if needed.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: chatbot
  labels:
    app: chatbot
spec:
HEADER
	sed -n '/^groups:/,$p' "$dir/rules.yml" | sed 's/^\(.\)/  \1/'
}

case "${1:-}" in
--stdout) generate ;;
"") generate >"$dir/prometheusrule.yaml.tmp" && mv "$dir/prometheusrule.yaml.tmp" "$dir/prometheusrule.yaml" ;;
*) echo "usage: $0 [--stdout]" >&2; exit 2 ;;
esac
