"""Checks of the deployment files under deploy/.

* every YAML file parses (PyYAML, all documents);
* promtool accepts the Prometheus configs and the alert rules, and the alert
  unit tests in deploy/prometheus/alerts_test.yml pass (skipped without
  promtool; Debian ships it in the `prometheus` package);
* the Grafana dashboard and the alerts only query metrics the program
  exports, and the dashboard PromQL parses;
* compose publishes ports on 127.0.0.1 only, and the pieces agree with each
  other (ports, file mounts, labels, selectors, job name).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
DASHBOARD = GRAFANA / "dashboards" / "vsr.json"

METRICS_PORT = 9108

# The metrics vsr exports (name -> type).
EXPORTED_METRICS = {
    "vsr_frames_total": "counter",
    "vsr_stage_latency_seconds": "histogram",
    "vsr_queue_depth": "gauge",
    "vsr_queue_capacity": "gauge",
    "vsr_throughput_fps": "gauge",
    "vsr_errors_total": "counter",
    "vsr_scene_cuts_total": "counter",
    "vsr_window_frames": "gauge",
    "vsr_input_frames": "gauge",
    "vsr_backend_info": "gauge",
    "vsr_model_macs_per_frame": "gauge",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

needs_yaml = pytest.mark.usefixtures()  # PyYAML is a test extra: a missing one fails at import, never skips


def _find_promtool() -> str | None:
    found = shutil.which("promtool")
    if found:
        return found
    fallback = Path("/usr/bin/promtool")
    return str(fallback) if fallback.exists() else None


PROMTOOL = _find_promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found on PATH or at /usr/bin/promtool "
    "(Debian/Ubuntu: apt-get install prometheus)",
)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------
# Metric-name checking

_METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])vsr_[a-z_]+")


def referenced_metrics(expr: str) -> set[str]:
    """Base metric names referenced by a PromQL expression.

    Histogram series (_bucket/_sum/_count) map to their histogram's name, but
    only for metrics that really are histograms: `vsr_frames_total_count` is
    reported as is (and is unknown).
    """
    names = set()
    for name in _METRIC_RE.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            base = name[: -len(suffix)]
            if name.endswith(suffix) and EXPORTED_METRICS.get(base) == "histogram":
                name = base
                break
        names.add(name)
    return names


def metric_problems(expr: str) -> list[str]:
    problems = []
    for name in sorted(referenced_metrics(expr)):
        if name not in EXPORTED_METRICS:
            problems.append(f"unknown metric {name!r}")
    # A histogram has no series under its bare name.
    for name, kind in EXPORTED_METRICS.items():
        if kind == "histogram" and re.search(
            rf"(?<![A-Za-z0-9_:]){name}(?![A-Za-z0-9_:])", expr
        ):
            problems.append(f"histogram {name!r} used without _bucket/_sum/_count")
    return problems


@pytest.mark.parametrize(
    "expr, problems",
    [
        ('rate(vsr_frames_total{stage="encode"}[1m])', []),
        ("histogram_quantile(0.9, rate(vsr_stage_latency_seconds_bucket[1m]))", []),
        ("vsr_stage_latency_seconds_sum / vsr_stage_latency_seconds_count", []),
        ("rate(vsr_frame_total[1m])", ["unknown metric 'vsr_frame_total'"]),
        ("vsr_frames_total_count", ["unknown metric 'vsr_frames_total_count'"]),
        (
            "vsr_stage_latency_seconds",
            ["histogram 'vsr_stage_latency_seconds' used without _bucket/_sum/_count"],
        ),
        ('up{job="vsr"} == 0', []),
        ("not_vsr_frames_total", []),
    ],
)
def test_metric_name_checker(expr, problems):
    assert metric_problems(expr) == problems


# ---------------------------------------------------------------------------
# Files and YAML

EXPECTED_FILES = [
    "Dockerfile",
    "Dockerfile.cuda",
    "compose.yaml",
    "README.md",
    "prometheus/prometheus.yml",
    "prometheus/prometheus-local.yml",
    "prometheus/alerts.yml",
    "prometheus/alerts_test.yml",
    "grafana/provisioning/datasources/prometheus.yml",
    "grafana/provisioning/dashboards/dashboards.yml",
    "grafana/dashboards/vsr.json",
    "k8s/job.yaml",
    "k8s/deployment.yaml",
    "k8s/servicemonitor.yaml",
    "k8s/prometheusrule.yaml",
]

YAML_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml")
)


@pytest.mark.parametrize("rel", EXPECTED_FILES)
def test_expected_file_exists(rel):
    assert (DEPLOY / rel).is_file(), f"deploy/{rel} is missing"


def test_yaml_files_found():
    assert len(YAML_FILES) >= 10, YAML_FILES


@needs_yaml
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    with path.open(encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    docs = [d for d in docs if d is not None]
    assert docs, f"{path} has no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: top level is not a mapping"


# ---------------------------------------------------------------------------
# Prometheus


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus-local.yml", "prometheus.yml"])
def test_promtool_check_config(config):
    res = promtool("check", "config", f"deploy/prometheus/{config}")
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_check_rules():
    res = promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_alert_unit_tests():
    res = promtool("test", "rules", "alerts_test.yml", cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr


@needs_yaml
@pytest.mark.parametrize(
    "config, target",
    [("prometheus.yml", f"vsr:{METRICS_PORT}"), ("prometheus-local.yml", f"127.0.0.1:{METRICS_PORT}")],
)
def test_prometheus_scrape_config(config, target):
    cfg = load_yaml(PROM / config)
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "vsr" in jobs
    job = jobs["vsr"]
    assert job["scrape_interval"] == "5s"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [target]


def alert_rules() -> dict[str, dict]:
    groups = load_yaml(PROM / "alerts.yml")["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


@needs_yaml
def test_alert_rules_present():
    rules = alert_rules()
    expected = {"VsrStalled", "VsrBelowRealTime", "VsrErrors", "VsrQueueFull", "VsrTargetDown"}
    assert expected <= set(rules)
    assert rules["VsrBelowRealTime"]["labels"]["severity"] == "warning"
    assert rules["VsrStalled"]["for"] == "2m"
    assert rules["VsrBelowRealTime"]["for"] == "5m"
    assert rules["VsrQueueFull"]["for"] == "2m"
    assert 'stage="encode"' in rules["VsrStalled"]["expr"]
    assert "vsr_queue_capacity" in rules["VsrQueueFull"]["expr"]
    assert "increase(vsr_errors_total[5m])" in rules["VsrErrors"]["expr"].replace('{job="vsr"}', "")
    assert 'up{job="vsr"} == 0' in rules["VsrTargetDown"]["expr"]
    for name, rule in rules.items():
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        assert rule.get("annotations", {}).get("summary"), name


@needs_yaml
def test_alert_rules_use_exported_metrics():
    for name, rule in alert_rules().items():
        problems = metric_problems(rule["expr"])
        assert not problems, f"{name}: {problems}"


@needs_yaml
def test_prometheusrule_matches_alerts():
    alerts = load_yaml(PROM / "alerts.yml")
    rule = load_yaml(K8S / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/k8s/prometheusrule.yaml is out of step with deploy/prometheus/alerts.yml"
    )


# ---------------------------------------------------------------------------
# Grafana


def load_dashboard() -> dict:
    with DASHBOARD.open(encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard: dict) -> list[dict]:
    out = []

    def walk(panels):
        for p in panels:
            out.append(p)
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression: panel targets and variables."""
    exprs = []
    for p in all_panels(dashboard):
        for t in p.get("targets", []):
            if "expr" in t:
                exprs.append((f"panel {p.get('title')!r}/{t.get('refId')}", t["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q:
            exprs.append((f"variable {var['name']!r}", q))
    return exprs


def test_dashboard_structure():
    d = load_dashboard()
    assert d["uid"] and d["title"]
    assert 36 <= d["schemaVersion"] <= 41
    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in occupied, f"{p['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no queries"
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r} has an empty query"


def test_dashboard_uses_only_exported_metrics():
    exprs = dashboard_exprs(load_dashboard())
    assert len(exprs) >= 10
    problems = [f"{where}: {p}" for where, e in exprs for p in metric_problems(e)]
    assert not problems, "\n".join(problems)


def test_dashboard_covers_required_views():
    d = load_dashboard()
    panels = [p for p in all_panels(d) if p["type"] != "row"]

    def squash(s: str) -> str:
        return re.sub(r"\s+", "", s)

    def panels_with(pattern: str) -> list[dict]:
        rx = re.compile(pattern)
        return [p for p in panels if any(rx.search(squash(t["expr"])) for t in p["targets"])]

    # frames per second per stage
    assert panels_with(r"sumby\(stage\)\(rate\(vsr_frames_total(\{[^}]*\})?\[30s\]\)\)")
    # throughput gauge
    assert any(p["type"] == "gauge" for p in panels_with(r"vsr_throughput_fps"))
    # stage latency quantiles
    for q in ("0.5", "0.95", "0.99"):
        assert panels_with(
            rf"histogram_quantile\({re.escape(q)},sumby\(le,stage\)\(rate\(vsr_stage_latency_seconds_bucket"
        ), f"no p{q} latency"
    # queue depth vs capacity in one panel
    assert set(map(id, panels_with(r"vsr_queue_depth"))) & set(map(id, panels_with(r"vsr_queue_capacity")))
    # errors by stage and kind
    assert panels_with(r"sumby\(stage,kind\)\((rate|increase)\(vsr_errors_total")
    assert panels_with(r"vsr_scene_cuts_total")
    assert panels_with(r"vsr_backend_info")
    # progress
    assert panels_with(r'vsr_frames_total\{[^}]*stage="encode"[^}]*\}/.*vsr_input_frames')


def test_dashboard_datasources():
    d = load_dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    allowed = {"prometheus"}
    ds_var = [v for v in variables.values() if v["type"] == "datasource"]
    for v in ds_var:
        assert v["query"] == "prometheus"
        allowed |= {f"${{{v['name']}}}", f"${v['name']}"}
    for p in all_panels(d):
        if p["type"] == "row":
            continue
        for obj in [p, *p["targets"]]:
            ds = obj.get("datasource")
            assert ds and ds.get("type") == "prometheus", p["title"]
            assert ds.get("uid") in allowed, (p["title"], ds)
    # Variables used in queries must exist.
    for where, expr in dashboard_exprs(d):
        for name in re.findall(r"\$\{?([A-Za-z_]\w*)", expr):
            assert name.startswith("__") or name in variables, f"{where}: ${name} undefined"


@needs_yaml
def test_dashboard_default_datasource_is_provisioned():
    prov = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uids = {ds["uid"] for ds in prov["datasources"] if ds["type"] == "prometheus"}
    d = load_dashboard()
    for v in d["templating"]["list"]:
        if v["type"] == "datasource":
            assert v["current"]["value"] in uids


@needs_promtool
def test_dashboard_promql_parses(tmp_path):
    """Every dashboard query, with Grafana variables filled in, is valid PromQL
    (checked by promtool as recording rules)."""
    subs = {
        r"\$\{?instance\}?": ".*",
        r"\$\{?__rate_interval\}?": "1m",
        r"\$\{?__interval\}?": "1m",
        r"\$\{?__range\}?": "1h",
    }
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs(load_dashboard())):
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr.strip())
            assert m, f"{where}: cannot parse {expr!r}"
            expr = m.group(1)
        for pat, rep in subs.items():
            expr = re.sub(pat, rep, expr)
        assert "$" not in expr, f"{where}: unsubstituted variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


@needs_yaml
def test_grafana_dashboard_provider_matches_compose_mount():
    prov = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    paths = {p["options"]["path"] for p in prov["providers"]}
    mounts = _bind_mounts(load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"])
    dash_targets = {target for src, target in mounts if (DEPLOY / src).resolve() == DASHBOARD.parent.resolve()}
    assert paths and paths <= dash_targets


# ---------------------------------------------------------------------------
# Compose


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            src, target = parts[0], parts[1]
        else:
            if v.get("type") != "bind":
                continue
            src, target = v["source"], v["target"]
        if src.startswith((".", "/")):
            out.append((src, target))
    return out


def _host_ip(port) -> str | None:
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).rsplit(":", 2)
    # "HOST_PORT:CONTAINER" or "CONTAINER" -> all interfaces
    return parts[0] if len(parts) == 3 else None


@needs_yaml
def test_compose_services():
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"vsr", "prometheus", "grafana"} <= set(services)
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    build = services["vsr"]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


@needs_yaml
def test_compose_ports_bound_to_localhost():
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    published = 0
    for name, svc in services.items():
        assert "network_mode" not in svc or svc["network_mode"] != "host", name
        for port in svc.get("ports", []):
            published += 1
            assert _host_ip(port) == "127.0.0.1", f"{name}: port {port!r} not bound to 127.0.0.1"
    assert published >= 3


@pytest.mark.parametrize(
    "port, ok",
    [("127.0.0.1:9108:9108", True), ("9108:9108", False), ("9108", False),
     ("0.0.0.0:9090:9090", False), ({"target": 3000, "published": 3000}, False),
     ({"target": 3000, "published": 3000, "host_ip": "127.0.0.1"}, True)],
)
def test_host_ip_parser(port, ok):
    assert (_host_ip(port) == "127.0.0.1") is ok


@needs_yaml
def test_compose_vsr_command_and_metrics():
    svc = load_yaml(DEPLOY / "compose.yaml")["services"]["vsr"]
    cmd = svc["command"]
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    assert cmd[:3] == ["upscale", "/media/in.mp4", "/media/out.mp4"]
    assert cmd[cmd.index("--metrics-port") + 1] == str(METRICS_PORT)
    assert cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"
    assert any(str(p).endswith(f":{METRICS_PORT}") for p in svc["ports"])
    assert ("./media", "/media") in _bind_mounts(svc)


@needs_yaml
def test_compose_bind_mounts_exist():
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    mounts = _bind_mounts(services["prometheus"])
    targets = dict((t, s) for s, t in mounts)
    assert (DEPLOY / targets["/etc/prometheus/prometheus.yml"]).resolve() == (PROM / "prometheus.yml").resolve()
    assert (DEPLOY / targets["/etc/prometheus/alerts.yml"]).resolve() == (PROM / "alerts.yml").resolve()
    for name, svc in services.items():
        for src, _ in _bind_mounts(svc):
            assert (DEPLOY / src).exists(), f"{name}: bind mount source {src} missing"


# ---------------------------------------------------------------------------
# Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_cpu():
    ins = _instructions(DEPLOY / "Dockerfile")
    ops = [op for op, _ in ins]
    assert ins[ops.index("FROM")][1] == "python:3.11-slim-bookworm"
    runs = " ".join(r for op, r in ins if op == "RUN")
    assert "apt-get install" in runs and "ffmpeg" in runs
    assert re.search(r"pip install .*torch==(\$\{TORCH_VERSION\}|2\.13\.0)", runs)
    args = dict(r.split("=", 1) for op, r in ins if op == "ARG" and "=" in r)
    assert args.get("TORCH_VERSION") == "2.13.0"
    assert "download.pytorch.org/whl/cpu" in args.get("TORCH_INDEX_URL", "") + runs
    assert re.search(r"pip install (\.|\"\.\")( |$|&)", runs)
    _common_dockerfile_checks(ins)


def test_dockerfile_cuda():
    ins = _instructions(DEPLOY / "Dockerfile.cuda")
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", ins[0][1] if ins[0][0] == "FROM" else "")
    runs = " ".join(r for op, r in ins if op == "RUN")
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in runs
    assert re.search(r"pip install \.(\s|$)", runs)  # the project itself (no extras exist)
    _common_dockerfile_checks(ins)


def _common_dockerfile_checks(ins):
    ops = [op for op, _ in ins]
    copies = " ".join(r for op, r in ins if op == "COPY")
    for src in ("pyproject.toml", "vsr_pipeline/", "engines/"):
        assert src in copies
    users = [r for op, r in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "image must end as a non-root user"
    # pip installs the package into site-packages; the shipped weights must still be found.
    envs = " ".join(r for op, r in ins if op == "ENV")
    assert "VSR_ENGINES_DIR=/app/engines" in envs and "./engines/" in copies
    # Everything after the last USER runs unprivileged; installs must come before.
    assert ops.index("USER") > max(i for i, (op, r) in enumerate(ins) if op == "RUN" and "pip install" in r)
    assert ("EXPOSE", str(METRICS_PORT)) in ins
    entry = [r for op, r in ins if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["vsr"]


# ---------------------------------------------------------------------------
# Kubernetes


def _k8s_docs(name: str) -> list[dict]:
    with (K8S / name).open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _pod_specs() -> dict[str, dict]:
    job = _k8s_docs("job.yaml")[0]
    dep = _k8s_docs("deployment.yaml")[0]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert dep["kind"] == "Deployment" and dep["apiVersion"] == "apps/v1"
    return {"job": job["spec"]["template"], "deployment": dep["spec"]["template"]}


@needs_yaml
def test_k8s_workloads():
    dep = _k8s_docs("deployment.yaml")[0]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for kind, tmpl in _pod_specs().items():
        spec = tmpl["spec"]
        if kind == "job":
            assert spec["restartPolicy"] in ("Never", "OnFailure")
        assert spec["securityContext"]["runAsNonRoot"] is True
        (c,) = spec["containers"]
        args = [str(a) for a in c["args"]]
        assert args[0] == "upscale"
        assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
        assert args[args.index("--metrics-port") + 1] == str(METRICS_PORT)
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in c["ports"]
        res = c["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"]
        assert res["limits"]["cpu"] and res["limits"]["memory"]
        assert "nvidia.com/gpu" not in res["limits"], "GPU limit should stay a commented option"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["name"] for m in c["volumeMounts"]}
        assert mounts <= {v["name"] for v in spec["volumes"]}
        if kind == "deployment":  # a live stream: probes on the endpoints `vsr stream` serves
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert "://" in next(e["value"] for e in c["env"] if e["name"] == "VSR_INPUT")
    for name in ("job.yaml", "deployment.yaml"):
        assert re.search(r"#\s*nvidia\.com/gpu:\s*1", (K8S / name).read_text()), name


@needs_yaml
def test_k8s_service_and_servicemonitor():
    docs = {d["kind"]: d for d in _k8s_docs("servicemonitor.yaml")}
    svc, sm = docs["Service"], docs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    # prometheus-operator names the job after the Service; alerts and dashboard use job="vsr".
    assert svc["metadata"]["name"] == "vsr"
    for kind, tmpl in _pod_specs().items():
        assert svc["spec"]["selector"].items() <= tmpl["metadata"]["labels"].items(), kind
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] in ("metrics", METRICS_PORT)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [port["name"]]
    assert sm["spec"]["endpoints"][0]["interval"] == "5s"
