#!/bin/sh
# Copies Kubernetes' published OpenAPI documents for the served group
# versions out of the k8s.io/kubernetes module, gzipped. Run by
# `go generate ./api/kube` when the Kubernetes minor changes.
set -eu
version=v1.33.5
dir=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
spec="$dir/api/openapi-spec"
cd "$(dirname "$0")"
for gv in api__v1 apis__apps__v1 apis__authentication.k8s.io__v1 apis__authorization.k8s.io__v1 apis__batch__v1 apis__coordination.k8s.io__v1 apis__discovery.k8s.io__v1 apis__networking.k8s.io__v1 apis__scheduling.k8s.io__v1; do
	gzip -9 -n -c "$spec/v3/${gv}_openapi.json" >"${gv}_openapi.json.gz"
done
gzip -9 -n -c "$spec/swagger.json" >swagger.json.gz
