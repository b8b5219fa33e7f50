"""Cross-file rules of the deployment that no schema can check (run by deploy/validate.sh).

Usage: python3 deploy/check_consistency.py [DEPLOY_DIR]

Each rule ties a value in a fedx.toml to the manifests or the compose file that must agree with it:

* Quotas. Rate limits and harvest budgets are totals and each replica enforces 1/limits.replicas of
  them (gateway/src/limits/mod.rs). The most pods that can run at once — HPA maxReplicas plus the
  rollout's maxSurge — must not exceed limits.replicas, or the totals can be exceeded. Fewer replicas
  than limits.replicas is allowed (departments then get less than their quota) and reported.
* Shutdown. The kill grace must cover the preStop sleep, resilience.drain_timeout, the cut grace and
  the exchange-log flush, or the last records and checkpoint are lost to SIGKILL.
* Ports and paths. listen_addr and telemetry.admin_listen must listen on all interfaces on the ports the
  container declares and the probes use; pki.dir, the key files and the catalogue must be where the
  volumes are mounted.
"""

import sys
import tomllib
from pathlib import Path

import yaml

# Seconds, beyond preStop + drain_timeout: the cut grace (resilience::shutdown::CUT_GRACE = 2 s), the
# exchange-log flush with its last signed checkpoint, and margin.
SHUTDOWN_MARGIN = 10

errors: list[str] = []
notes: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        errors.append(message)


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def all_interfaces(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0]
    return host in ("0.0.0.0", "[::]")


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else c
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return total + (float(number) if number else 0)


def check_kubernetes(deploy: Path) -> None:
    k8s = deploy / "k8s"
    config = tomllib.loads((k8s / "fedx.toml").read_text())
    deployment = one(load_yaml_docs(k8s / "deployment.yaml"), "Deployment")
    hpa = one(load_yaml_docs(k8s / "hpa.yaml"), "HorizontalPodAutoscaler")
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())

    replicas = config["limits"]["replicas"]
    spec = deployment["spec"]
    surge = spec.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
    check(isinstance(surge, int), f"k8s: rollout maxSurge must be a number of pods, not {surge!r}")
    surge = surge if isinstance(surge, int) else 1
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    check(
        high + surge <= replicas,
        f"k8s: up to {high + surge} pods can run (HPA maxReplicas {high} + maxSurge {surge}) but "
        f"limits.replicas = {replicas}: the per-replica shares would exceed the configured totals",
    )
    check(low <= spec["replicas"] <= high, f"k8s: Deployment replicas {spec['replicas']} outside HPA {low}..{high}")
    if low < replicas:
        notes.append(
            f"k8s: with {low} of limits.replicas = {replicas} pods running, each department gets "
            f"{low}/{replicas} of its quota"
        )

    pod = spec["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(all_interfaces(config["listen_addr"]), "k8s: listen_addr must listen on all interfaces")
    check(port_of(config["listen_addr"]) == ports["grpc"], "k8s: listen_addr port != container port grpc")
    admin = config["telemetry"]["admin_listen"]
    check(all_interfaces(admin), "k8s: telemetry.admin_listen must listen on all interfaces (probes)")
    check(port_of(admin) == ports["admin"], "k8s: telemetry.admin_listen port != container port admin")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        target = container[probe]["httpGet"]["port"]
        check(target in ("admin", ports["admin"]), f"k8s: {probe} does not use the admin port")

    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = config["resilience"]["drain_timeout"]
    grace = pod["terminationGracePeriodSeconds"]
    check(
        grace >= pre_stop + drain + SHUTDOWN_MARGIN,
        f"k8s: terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain_timeout {drain} + "
        f"{SHUTDOWN_MARGIN}",
    )

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(config["pki"]["dir"] == mounts["pki"], "k8s: pki.dir is not where Secret fedx-pki is mounted")
    key_items = {i["path"] for i in volumes["keys"]["secret"]["items"]}
    for key in (config["signing"]["key_file"], config["identity"]["worker_ref_key_file"]):
        directory, _, name = key.rpartition("/")
        check(directory == mounts["keys"] and name in key_items, f"k8s: {key} is not in Secret fedx-keys")
    pki_items = {i["path"] for i in volumes["pki"]["secret"]["items"]}
    check(
        pki_items == {"ca.crt.pem", "ca.crl.pem", "server.crt.pem", "server.key.pem"},
        "k8s: Secret fedx-pki must mount exactly the CA certificate, the CRL and the server pair",
    )
    purposes = config["policy"]["purposes_file"]
    directory, _, name = purposes.rpartition("/")
    generated = {f for g in kustomization["configMapGenerator"] if g["name"] == "fedx-config" for f in g["files"]}
    check(
        directory == mounts["config"] and name in generated and "fedx.toml" in generated,
        "k8s: fedx.toml and the purposes_file must come from the fedx-config ConfigMap",
    )
    check(
        container["args"][-1] == f"{mounts['config']}/fedx.toml",
        "k8s: the container does not read the mounted fedx.toml",
    )


def check_compose(deploy: Path) -> None:
    compose_dir = deploy / "compose"
    config = tomllib.loads((compose_dir / "fedx.toml").read_text())
    compose = yaml.safe_load((compose_dir / "docker-compose.yml").read_text())
    gateways = {
        name: svc for name, svc in compose["services"].items() if (svc.get("command") or [None])[0] == "serve"
    }
    replicas = config["limits"]["replicas"]
    check(
        len(gateways) == replicas,
        f"compose: {len(gateways)} gateway services but limits.replicas = {replicas}",
    )
    check(all_interfaces(config["listen_addr"]), "compose: listen_addr must listen on all interfaces")
    check(all_interfaces(config["telemetry"]["admin_listen"]), "compose: admin_listen must listen on all interfaces")
    drain = config["resilience"]["drain_timeout"]
    for name, svc in gateways.items():
        grace = duration_seconds(str(svc.get("stop_grace_period", "10s")))
        check(
            grace >= drain + SHUTDOWN_MARGIN,
            f"compose: {name} stop_grace_period {grace:g}s < drain_timeout {drain} + {SHUTDOWN_MARGIN}",
        )
        targets = {v["target"] for v in svc["volumes"]}
        check(config["pki"]["dir"] in targets, f"compose: {name} does not mount pki.dir")
        for key in (config["signing"]["key_file"], config["identity"]["worker_ref_key_file"]):
            check(key.rpartition("/")[0] in targets, f"compose: {name} does not mount {key}")
        check(config["policy"]["purposes_file"] in targets, f"compose: {name} does not mount the catalogue")


def main() -> int:
    deploy = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    check_kubernetes(deploy)
    check_compose(deploy)
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    if errors:
        return 1
    print("consistent: quotas, shutdown grace, ports and mounts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
