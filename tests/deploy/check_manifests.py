#!/usr/bin/python3
"""Static checks of what ships: every Kubernetes manifest loads into the object models of
the Kubernetes Python client with no unknown field; each pgshard.yaml they (and the compose
file) carry passes `pgshard check` with its ${...} variables set; grace periods exceed
pgshard's shutdown timeout; the compose file names the Dockerfile and services it needs; the
admin HTTP endpoint is on a loopback address or asks for credentials (/metrics and the
dashboard are not open to the network), probes reach the pod, the ServiceMonitor sends the
token and compose publishes the admin port on the host's loopback only.
   check_manifests.py PGSHARD_BINARY REPO_ROOT"""
import glob
import os
import re
import subprocess
import sys
import tempfile

import kubernetes.client as k8s
import yaml

BINARY, ROOT = sys.argv[1], sys.argv[2]
problems = []

KINDS = {("v1", "Secret"): "V1Secret", ("v1", "ConfigMap"): "V1ConfigMap",
         ("v1", "Service"): "V1Service", ("apps/v1", "Deployment"): "V1Deployment",
         ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget"}
PRIMITIVE = {"str", "int", "bool", "float", "object", "datetime", "date"}


def check_model(value, type_name, where):
    """Walks `value` against the client's model `type_name`: unknown keys are problems."""
    if type_name in PRIMITIVE:
        return
    m = re.match(r"list\[(.*)\]$", type_name)
    if m:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            check_model(item, m.group(1), f"{where}[{i}]")
        return
    m = re.match(r"dict\(str, (.*)\)$", type_name)
    if m:
        for k, v in (value or {}).items():
            check_model(v, m.group(1), f"{where}.{k}")
        return
    cls = getattr(k8s, type_name)
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object ({type_name})")
        return
    for key, v in value.items():
        if key not in by_json:
            problems.append(f"{where}: unknown field '{key}' in {type_name}")
            continue
        check_model(v, cls.openapi_types[by_json[key]], f"{where}.{key}")


def duration_s(text):
    m = re.match(r"^(\d+)(ms|s|min)$", text)
    return int(m.group(1)) / {"ms": 1000, "s": 1, "min": 1 / 60}[m.group(2)] if m else None


LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
HTTP_AUTH_KEYS = {"http_auth_token", "http_auth_token_file", "http_basic_auth", "http_basic_auth_file"}


def check_http_exposure(cfg, where):
    """An admin endpoint reachable from the network must ask for credentials."""
    admin = cfg.get("admin") or {}
    http = str(admin.get("http") or "")
    host = http.rsplit(":", 1)[0] if ":" in http else ""
    if http and host not in LOOPBACK and not HTTP_AUTH_KEYS & set(admin):
        problems.append(f"{where}: admin.http {http} is open to the network without "
                        "admin.http_auth_token or admin.http_basic_auth")


def pgshard_check(config_text, env, where):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_text)
    r = subprocess.run([BINARY, "check", f.name], capture_output=True, text=True,
                       env={**os.environ, **env})
    os.unlink(f.name)
    if r.returncode != 0:
        problems.append(f"{where}: pgshard check: {r.stdout}{r.stderr}".strip())
    cfg = yaml.safe_load(re.sub(r"\$\{\w+\}", "0", config_text))
    check_http_exposure(cfg, where)
    return duration_s((cfg.get("timeouts") or {}).get("shutdown", "30s"))


def check_docs(name, docs, secrets):
    """One manifest set: objects against the models, maps through `pgshard check` with the
    Secret's values (`secrets`, and any the set's own Secrets add), grace periods, probes."""
    secrets = dict(secrets)
    configs = {}
    for d in docs:
        if (d.get("apiVersion"), d.get("kind")) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
            check_service_monitor(d, f"{name}:ServiceMonitor")
            continue
        kind = KINDS.get((d.get("apiVersion"), d.get("kind")))
        if not kind:
            problems.append(f"{name}: unexpected {d.get('apiVersion')} {d.get('kind')}")
            continue
        check_model(d, kind, f"{name}:{d['kind']}/{d['metadata']['name']}")
        if d["kind"] == "Secret":
            secrets.update(d.get("stringData") or {})
        if d["kind"] == "ConfigMap" and "pgshard.yaml" in d.get("data", {}):
            configs[d["metadata"]["name"]] = d["data"]["pgshard.yaml"]
    shutdown = {n: pgshard_check(text, secrets, f"{name}:ConfigMap/{n}") for n, text in configs.items()}
    for d in docs:
        if d.get("kind") != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for v in spec.get("volumes", []):
            cm = (v.get("configMap") or {}).get("name")
            if cm in shutdown and shutdown[cm] is not None and grace <= shutdown[cm]:
                problems.append(f"{name}: Deployment/{d['metadata']['name']}: "
                                f"terminationGracePeriodSeconds {grace} <= pgshard shutdown {shutdown[cm]}s")
        for c in spec["containers"]:
            if c.get("image", "").startswith("pgshard") and not (
                    c.get("livenessProbe") and c.get("readinessProbe") and c.get("resources")):
                problems.append(f"{name}: container {c['name']} lacks probes or resources")
            check_probes(c, f"{name}: container {c['name']}")
    print(f"{name}: {len(docs)} objects checked")


def check_probes(c, where):
    """pgshard's probes ask the open paths, on the pod (a kubelet's httpGet with host
    127.0.0.1 asks the node)."""
    if not c.get("image", "").startswith("pgshard"):
        return
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problems.append(f"{where}: {probe} must be an httpGet of {path}")
        if get.get("host") in LOOPBACK:
            problems.append(f"{where}: {probe} sets host {get['host']} (the kubelet would ask the node)")


def check_service_monitor(d, where):
    """prometheus-operator's ServiceMonitor (a custom resource the client has no model of):
    the fields pgshard's chart sets, and nothing else."""
    spec = d.get("spec") or {}
    if set(d) - {"apiVersion", "kind", "metadata", "spec"} or set(spec) - {"selector", "endpoints"}:
        problems.append(f"{where}: unexpected fields")
    check_model(d.get("metadata"), "V1ObjectMeta", f"{where}.metadata")
    check_model(spec.get("selector"), "V1LabelSelector", f"{where}.spec.selector")
    for e in spec.get("endpoints") or [None]:
        if not e or e.get("path") != "/metrics" or not e.get("port") or \
                set(e) - {"port", "path", "interval", "authorization"}:
            problems.append(f"{where}: endpoints must name a port and path /metrics")
        auth = (e or {}).get("authorization") or {}
        creds = auth.get("credentials") or {}
        if auth.get("type") != "Bearer" or not creds.get("name") or not creds.get("key"):
            problems.append(f"{where}: endpoints must send the bearer token from a Secret "
                            "(authorization: {type: Bearer, credentials: {name, key}})")


for path in sorted(glob.glob(os.path.join(ROOT, "deploy/kubernetes/*.yaml"))):
    check_docs(os.path.relpath(path, ROOT), [d for d in yaml.safe_load_all(open(path)) if d], {})

# The Helm chart, rendered by tests/deploy/helm_render.py (the subset of Go templates the
# chart uses; anything more fails the render), with its defaults and with the optional
# ServiceMonitor on. Its Secret is the user's: placeholder values for the map's ${NAME}s.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helm_render  # noqa: E402

chart = os.path.join(ROOT, "deploy/helm/pgshard")
for sets in ([], ["metrics.serviceMonitor.enabled=true", "replicaCount=3"]):
    try:
        rendered = helm_render.render(chart, sets, release="shard-tier")
    except helm_render.TemplateError as e:
        problems.append(f"deploy/helm/pgshard: {e}")
        continue
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    env = {v: "placeholder" for d in docs if d.get("kind") == "ConfigMap"
           for v in re.findall(r"\$\{(\w+)\}", d["data"].get("pgshard.yaml", ""))}
    check_docs("deploy/helm/pgshard" + (f" --set {','.join(sets)}" if sets else ""), docs, env)
    kinds = sorted(d["kind"] for d in docs)
    want = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"] + \
        (["ServiceMonitor"] if sets else [])
    if kinds != sorted(want):
        problems.append(f"deploy/helm/pgshard: rendered {kinds}, expected {sorted(want)}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    if deployment["spec"]["replicas"] != (3 if sets else 2):
        problems.append("deploy/helm/pgshard: replicaCount not applied")
# The renderer refuses what it does not implement instead of rendering it wrongly.
for bad in ("{{ range .Values.x }}{{ end }}", "{{ include \"x\" . }}", "{{ if .a }}"):
    try:
        helm_render.render_nodes(helm_render.parse(helm_render.tokenize(bad)), {})
        problems.append(f"helm_render accepted {bad!r}")
    except helm_render.TemplateError:
        pass

compose_path = os.path.join(ROOT, "docker/compose.yaml")
compose_text = open(compose_path).read()
compose = yaml.safe_load(compose_text)
services = compose.get("services", {})
for s in ("shard0", "shard1", "shard2", "pgshard"):
    if s not in services:
        problems.append(f"docker/compose.yaml: no service {s}")
# Images come from Dockerfiles in the repository (Debian's packages), never from a registry.
for name, s in services.items():
    build = s.get("build") or {}
    dockerfile = os.path.normpath(os.path.join(ROOT, "docker", build.get("context", "."),
                                               build.get("dockerfile", "Dockerfile")))
    if not build or not os.path.isfile(dockerfile):
        problems.append(f"docker/compose.yaml: {name} has no Dockerfile of the repository")
    if any(isinstance(d, dict) for d in (s.get("depends_on") or [])) or \
            isinstance(s.get("depends_on"), dict):
        problems.append(f"docker/compose.yaml: {name}: depends_on conditions (podman-compose ignores them)")
# Shards take distinct ports, so the file also runs on a host network.
ports = [s.get("environment", {}).get("PGPORT") for n, s in services.items() if n.startswith("shard")]
if len(set(ports)) != 3 or None in ports:
    problems.append(f"docker/compose.yaml: shards need distinct PGPORTs, have {ports}")


def compose_default(value):
    """${NAME:-default} as compose substitutes it with NAME unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


# The admin HTTP port is published on the host's loopback only.
for published in services.get("pgshard", {}).get("ports", []):
    if "ADMIN_HTTP_PORT" in str(published) and not str(published).startswith("127.0.0.1:"):
        problems.append(f"docker/compose.yaml: admin port {published} is published on every address")
pgshard_env = {k: compose_default(v) for k, v in services.get("pgshard", {}).get("environment", {}).items()}
for volume in services.get("pgshard", {}).get("volumes", []):
    src = os.path.normpath(os.path.join(ROOT, "docker", volume.split(":")[0]))
    if src.endswith(".yaml"):
        pgshard_check(open(src).read(), pgshard_env, "docker/compose.yaml pgshard config")
for name, s in services.items():
    for volume in s.get("volumes", []):
        src = os.path.normpath(os.path.join(ROOT, "docker", volume.split(":")[0]))
        if not os.path.exists(src):
            problems.append(f"docker/compose.yaml: {name} mounts missing {src}")
for path in ("docker/Dockerfile", "docker/shard.Dockerfile"):
    for copied in re.findall(r"^COPY (?!--from)(\S+)", open(os.path.join(ROOT, path)).read(), re.M):
        # build/image/pgshard is the optional prebuilt binary (--build-arg PGSHARD_FROM=prebuilt).
        if not copied.startswith("build/") and not os.path.exists(os.path.join(ROOT, copied)):
            problems.append(f"{path}: COPY of missing {copied}")
docker = open(os.path.join(ROOT, "docker/Dockerfile")).read()
# The runtime stage installs Debian 12 packages by name: each must be a real package (the
# build machine runs Debian 12 and has them, as dependencies of the -dev packages).
runtime = docker.split("FROM debian:bookworm-slim", 1)[-1]
m = re.search(r"apt-get install -y --no-install-recommends \\\n(.*?)\\\n", runtime, re.S)
packages = m.group(1).split() if m else []
if not packages:
    problems.append("docker/Dockerfile: no runtime package list found")
for pkg in packages:
    if subprocess.run(["dpkg-query", "-W", pkg], capture_output=True).returncode != 0:
        problems.append(f"docker/Dockerfile: runtime package {pkg} is not a Debian 12 package here")
# Every shared library the binary needs comes from one of them (or their dependencies).
ldd = subprocess.run(["ldd", BINARY], capture_output=True, text=True).stdout
direct = {"libpg_query": "libpg-query1504.0", "libspdlog": "libspdlog1.10",
          "libyaml-cpp": "libyaml-cpp0.7", "libpq.so": "libpq5", "libssl.so": "libssl3"}
for lib, pkg in direct.items():
    if lib in ldd and pkg not in packages:
        problems.append(f"docker/Dockerfile: pgshard links {lib} but the runtime lacks {pkg}")
print("docker/compose.yaml and docker/Dockerfile checked")

for p in problems:
    print("PROBLEM:", p)
sys.exit(1 if problems else 0)
