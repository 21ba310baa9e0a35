"""Checks of the deployment files under deploy/.

* every YAML file parses (PyYAML, all documents);
* promtool accepts the Prometheus configs and the alert rules, and the alert
  unit tests in deploy/prometheus/alerts_test.yml pass, with a firing and a
  not-firing case for every alert (promtool comes with Debian's `prometheus`
  package, which .ci/run installs: a missing one fails, it is not skipped);
* every metric family the program registers (read from live PipelineMetrics
  and LiveMetrics registries) is on the Grafana dashboard or deliberately left
  off, and every dashboard and alert expression parses and names a metric that
  exists; the dashboard JSON is what deploy/grafana/make_dashboard.py writes;
* the Kubernetes manifests pass a schema validator (kubernetes-validate, strict:
  unknown fields are errors), and the live-channel Deployment is runnable as
  shipped (input Service, probes, engine-cache volume, waits for its input);
* compose publishes ports on 127.0.0.1 only, holds the engine cache in a
  volume, and the pieces agree with each other (ports, mounts, labels,
  selectors, job name); where Docker is installed the stack is brought up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from vsr_pipeline.metrics import LiveMetrics, PipelineMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
DASHBOARD = GRAFANA / "dashboards" / "vsr.json"

METRICS_PORT = 9108

def registered_metrics() -> dict[str, str]:
    """name -> type of every metric family a file job, a live job and a batch register, read from live
    registries (not from the source): counters under their exposed ``_total`` name."""
    out: dict[str, str] = {}
    from vsr_pipeline.run.batch_metrics import BatchMetrics

    for metrics in (PipelineMetrics(), LiveMetrics(), BatchMetrics()):
        for family in metrics.registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = family.type
    return out


# The metrics vsr exports (name -> type).
EXPORTED_METRICS = registered_metrics()
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")



def _find_promtool() -> str | None:
    found = shutil.which("promtool")
    if found:
        return found
    fallback = Path("/usr/bin/promtool")
    return str(fallback) if fallback.exists() else None


PROMTOOL = _find_promtool()


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None, "promtool not found on PATH or at /usr/bin/promtool (Debian: apt-get install prometheus; .ci/run does)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_registered_metrics_are_read_from_the_registries():
    metrics = registered_metrics()
    assert metrics["vsr_frames_total"] == "counter"
    assert metrics["vsr_stage_latency_seconds"] == "histogram"
    assert metrics["vsr_throughput_fps"] == "gauge"  # a scrape-time collector
    assert metrics["vsr_output_connected"] == "gauge"  # a live one, with no sample yet
    assert metrics["vsr_end_to_end_latency_seconds"] == "histogram"
    assert len(metrics) >= 25, sorted(metrics)


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
        ("rate(vsr_batch_chunks_total[1m])", ["unknown metric 'vsr_batch_chunks_total'"]),
        ("vsr:threshold:queue_full_ratio", []),
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
    "k8s/input-service.yaml",
    "grafana/make_dashboard.py",
    "grafana/plot_dashboard.py",
    "grafana/demo_run.py",
    "dashboard.png",
]

YAML_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml")
)


@pytest.mark.parametrize("rel", EXPECTED_FILES)
def test_expected_file_exists(rel):
    assert (DEPLOY / rel).is_file(), f"deploy/{rel} is missing"


def test_yaml_files_found():
    assert len(YAML_FILES) >= 10, YAML_FILES


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


@pytest.mark.parametrize("config", ["prometheus-local.yml", "prometheus.yml"])
def test_promtool_check_config(config):
    res = promtool("check", "config", f"deploy/prometheus/{config}")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_rules():
    res = promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_alert_unit_tests():
    res = promtool("test", "rules", "alerts_test.yml", cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_alert_unit_tests_can_fail(tmp_path):
    """The unit tests notice a broken rule: with the finished-job exception taken out of
    VsrTargetDown, or the Lanczos share threshold raised, they fail."""
    text = (PROM / "alerts.yml").read_text(encoding="utf-8")
    for old, new, alert in (
        ("unless on(job, instance) vsr:job_finished", "unless on(job, instance) vector(0)", "VsrTargetDown"),
        ("expr: vector(0.1)", "expr: vector(0.3)", "VsrFramesNotUpscaled"),
    ):
        assert old in text
        (tmp_path / "alerts.yml").write_text(text.replace(old, new), encoding="utf-8")
        shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
        res = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
        assert res.returncode != 0 and f"alertname: {alert}" in res.stdout + res.stderr, res.stdout + res.stderr


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


def recording_rules() -> dict[str, dict]:
    groups = load_yaml(PROM / "alerts.yml")["groups"]
    return {r["record"]: r for g in groups for r in g["rules"] if "record" in r}


_RECORDED_RE = re.compile(r"\bvsr:[a-z0-9_:]+")

ALERTS = {
    # file jobs and live channels
    "VsrStalled", "VsrErrors", "VsrQueueFull", "VsrTargetDown", "VsrBackendFellBackToCPU",
    # live channels
    "VsrInputStalled", "VsrOutputDown", "VsrLatencyOverBudget", "VsrFramesNotUpscaled", "VsrBelowRealTime", "VsrFramesDropped",
}


def test_alert_rules_present():
    rules = alert_rules()
    assert set(rules) == ALERTS
    assert rules["VsrStalled"]["for"] == "2m"
    assert rules["VsrBelowRealTime"]["for"] == "5m"
    assert rules["VsrQueueFull"]["for"] == "2m"
    assert rules["VsrInputStalled"]["for"] == "10s"
    assert 'stage="encode"' in rules["VsrStalled"]["expr"]
    assert "vsr_queue_capacity" in rules["VsrQueueFull"]["expr"]
    assert "increase(vsr_errors_total[5m])" in rules["VsrErrors"]["expr"].replace('{job="vsr"}', "")
    assert 'up{job="vsr"} == 0' in rules["VsrTargetDown"]["expr"]
    # a finished batch job is not "down"; real time is judged on the network's frames, live only
    assert "vsr:job_finished" in rules["VsrTargetDown"]["expr"]
    assert "vsr_throughput_fps" in rules["VsrBelowRealTime"]["expr"] and "vsr_latency_budget_seconds" in rules["VsrBelowRealTime"]["expr"]
    assert 'kind="classical"' in recording_rules()["vsr:not_upscaled:ratio_rate5m"]["expr"]
    for name, rule in rules.items():
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        assert rule.get("annotations", {}).get("summary"), name
        assert rule.get("annotations", {}).get("description"), name


def test_alert_rules_use_exported_metrics():
    for name, rule in {**alert_rules(), **recording_rules()}.items():
        problems = metric_problems(rule["expr"])
        assert not problems, f"{name}: {problems}"
        for recorded in _RECORDED_RE.findall(rule["expr"]):
            assert recorded in recording_rules(), f"{name}: {recorded} is not a recording rule in alerts.yml"


def test_alert_thresholds_are_recording_rules():
    """Thresholds live in `vsr:threshold:*` recording rules (documented in deploy/README.md), not
    inside the alert expressions; each is used by an alert."""
    thresholds = {name: rule for name, rule in recording_rules().items() if name.startswith("vsr:threshold:")}
    assert len(thresholds) >= 5
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    alert_exprs = " ".join(r["expr"] for r in alert_rules().values())
    for name, rule in thresholds.items():
        assert re.fullmatch(r"vector\([0-9.]+\)", rule["expr"].strip()), f"{name}: {rule['expr']!r}"
        assert name in alert_exprs, f"{name} is used by no alert"
        assert f"`{name}`" in readme, f"{name} is not documented in deploy/README.md"
    for name, rule in alert_rules().items():
        # no number compared in an alert but 0 and 1 (states): the rest are thresholds
        numbers = re.findall(r"(?:[<>]=?|==|!=)\s*([0-9.]+)(?![0-9.]*[smhd\]])", rule["expr"])
        assert set(numbers) <= {"0", "1"}, f"{name}: threshold(s) {numbers} inside the expression"


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a Markdown text."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_alerts_have_runbooks():
    anchors = _anchors((DEPLOY / "README.md").read_text(encoding="utf-8"))
    for name, rule in alert_rules().items():
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"deploy/README.md#{name.lower()}", f"{name}: runbook_url {url!r}"
        assert name.lower() in anchors, f"{name}: no '### {name}' section in deploy/README.md"


def test_every_alert_has_firing_and_quiet_unit_tests():
    """alerts_test.yml has, for every alert, a case where it fires and one where it must not."""
    cases = load_yaml(PROM / "alerts_test.yml")["tests"]
    firing, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert ALERTS - firing == set(), f"alerts never seen firing: {sorted(ALERTS - firing)}"
    assert ALERTS - quiet == set(), f"alerts never seen not firing: {sorted(ALERTS - quiet)}"


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


def _dashboard_module():
    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_generated():
    """vsr.json is what deploy/grafana/make_dashboard.py writes (edit the script, then run it)."""
    module = _dashboard_module()
    assert DASHBOARD.read_text(encoding="utf-8") == module.render(), "run: python3 deploy/grafana/make_dashboard.py"
    res = subprocess.run(["python3", str(GRAFANA / "make_dashboard.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _families_on(expr: str) -> set[str]:
    return {name for name in referenced_metrics(expr) if name in EXPORTED_METRICS}


def test_dashboard_shows_every_registered_metric():
    """Every metric family a PipelineMetrics or LiveMetrics registry holds is queried by some panel,
    or listed in make_dashboard.LEFT_OFF with a reason."""
    shown = set().union(*(_families_on(e) for _, e in dashboard_exprs(load_dashboard())))
    left_off = _dashboard_module().LEFT_OFF
    assert all(isinstance(why, str) and why for why in left_off.values())
    missing = sorted(set(EXPORTED_METRICS) - shown - set(left_off))
    assert not missing, f"registered but neither on the dashboard nor in LEFT_OFF: {missing}"
    assert not set(left_off) - set(EXPORTED_METRICS), "LEFT_OFF names metrics that do not exist"
    assert not set(left_off) & shown, "LEFT_OFF names metrics that are on the dashboard"


def test_dashboard_coverage_check_can_fail():
    """A metric registered but shown nowhere is reported (the check above is not vacuous)."""
    from prometheus_client import Gauge

    metrics = LiveMetrics()
    Gauge("vsr_new_thing", "a metric nobody put on the dashboard", registry=metrics.registry)
    names = {f.name for f in metrics.registry.collect()}
    shown = set().union(*(referenced_metrics(e) for _, e in dashboard_exprs(load_dashboard())))
    assert "vsr_new_thing" in names and "vsr_new_thing" not in shown


def test_dashboard_live_faces_rows():
    d = load_dashboard()
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert "Live channel" in rows and any(r.startswith("Faces") for r in rows)
    exprs = " ".join(e for _, e in dashboard_exprs(d))
    for needle in ("histogram_quantile(0.99, sum by (le, instance) (rate(vsr_end_to_end_latency_seconds_bucket", "vsr_latency_budget_seconds",
                   "sum by (kind) (rate(vsr_output_frames_total", "sum by (reason) (rate(vsr_frames_degraded_total",
                   "sum by (reason) (increase(vsr_frames_dropped_total", "vsr_input_bitrate_bps", "vsr_input_stalls_total",
                   "vsr_input_reconnects_total", "vsr_input_connected", "vsr_output_reconnects_total", "vsr_output_connected",
                   "vsr_faces_detected_total", "vsr_face_tracks", "vsr_face_latency_seconds_bucket"):
        assert needle in exprs, needle
    # one dashboard for many channels: every panel query selects $channel and $instance
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"channel", "instance"} <= variables
    for where, expr in dashboard_exprs(d):
        if where.startswith("panel"):
            for selector in re.findall(r"vsr_\w+\{([^}]*)\}", expr):
                assert 'channel=~"$channel"' in selector and 'instance=~"$instance"' in selector, f"{where}: {selector}"


def test_dashboard_structure():
    """The dashboard fits Grafana's file provisioning: a dashboard model (not an API envelope),
    no fixed numeric id, a valid uid, known panel types, rows, unique ids, no overlaps."""
    d = load_dashboard()
    assert d["uid"] and d["title"]
    assert "dashboard" not in d and d.get("id") is None  # provisioning takes the bare model
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert 36 <= d["schemaVersion"] <= 41
    assert {p["type"] for p in all_panels(d)} <= {"row", "stat", "gauge", "timeseries"}
    for var in d["templating"]["list"]:
        assert var["type"] in {"datasource", "query"} and re.fullmatch(r"[a-z_]+", var["name"])
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


def test_dashboard_default_datasource_is_provisioned():
    prov = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uids = {ds["uid"] for ds in prov["datasources"] if ds["type"] == "prometheus"}
    d = load_dashboard()
    for v in d["templating"]["list"]:
        if v["type"] == "datasource":
            assert v["current"]["value"] in uids


def test_dashboard_promql_parses(tmp_path):
    """Every dashboard query, with Grafana variables filled in, is valid PromQL
    (checked by promtool as recording rules)."""
    subs = {
        r"\$\{?instance\}?": ".*",
        r"\$\{?channel\}?": ".*",
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


def test_compose_services():
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"vsr", "prometheus", "grafana"} <= set(services)
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    build = services["vsr"]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


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


def test_compose_vsr_command_and_metrics():
    svc = load_yaml(DEPLOY / "compose.yaml")["services"]["vsr"]
    cmd = svc["command"]
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    assert cmd[:3] == ["upscale", "/media/in.mp4", "/media/out.mp4"]
    assert cmd[cmd.index("--metrics-port") + 1] == str(METRICS_PORT)
    assert cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"
    assert any(str(p).endswith(f":{METRICS_PORT}") for p in svc["ports"])
    assert ("./media", "/media") in _bind_mounts(svc)
    assert float(cmd[cmd.index("--metrics-linger") + 1]) >= 10  # Prometheus sees the job finish


def test_compose_builds_the_engines_once_before_the_job():
    """The one-shot `engines` service: a `vsr engines build` command line our own parser accepts
    (the compose default of `${VSR_INPUT_SIZE:-...}` substituted), the same image and engine-cache
    volume as the job, and the file and batch jobs start only after it has succeeded."""
    import re

    from vsr_pipeline.cli import build_parser

    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    engines = services["engines"]
    assert engines["image"] == services["vsr"]["image"] and engines["build"] == services["vsr"]["build"]
    argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(c)) for c in engines["command"]]
    args = build_parser().parse_args(argv)
    assert (args.command, args.engines_command, args.input_size) == ("engines", "build", ["1920x1080"])
    assert "engine-cache:/app/engines/cache" in engines["volumes"]
    assert engines.get("restart") == "no" and "ports" not in engines
    for job in ("vsr", "batch"):
        assert services[job]["depends_on"]["engines"] == {"condition": "service_completed_successfully"}, job


def test_compose_engine_cache_is_a_volume():
    """The engine cache lives in a named volume, which Docker creates from the image's
    /app/engines/cache (mode 1777): writable by whatever uid `user:` names."""
    compose = load_yaml(DEPLOY / "compose.yaml")
    svc = compose["services"]["vsr"]
    named = [v.split(":") for v in svc["volumes"] if isinstance(v, str) and not v.startswith((".", "/"))]
    assert ["engine-cache", "/app/engines/cache"] in named
    assert "engine-cache" in compose["volumes"]
    assert str(svc["user"]).startswith("${VSR_UID")
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        runs = " ".join(r for op, r in _instructions(DEPLOY / dockerfile) if op == "RUN")
        assert "mkdir -p /media /app/engines/cache" in runs and "chmod 1777 /app/engines/cache" in runs, dockerfile


DOCKER = shutil.which("docker")


def _docker_missing() -> str | None:
    """Why the compose stack cannot be brought up here (None: it can)."""
    if DOCKER is None:
        return "docker is not installed"
    if subprocess.run([DOCKER, "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        return "docker has no compose plugin (docker compose)"
    if subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker daemon is running"
    return None


_NO_DOCKER = _docker_missing()


@pytest.mark.skipif(_NO_DOCKER is not None, reason=f"{_NO_DOCKER}: the compose stack can only be brought up where Docker runs (the files are checked above)")
def test_compose_stack_comes_up(tmp_path):
    """Build and start the stack as the current user on a 1-second clip: vsr upscales it and exits
    0 (writing the engine cache as a uid other than the image's is the point), Prometheus has
    scraped the finished counts and loaded the rules, Grafana is healthy."""
    media = DEPLOY / "media"
    media.mkdir(exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=1",
                    "-pix_fmt", "yuv420p", str(media / "in.mp4")], check=True, timeout=60)
    env = {**os.environ, "VSR_UID": str(os.getuid() or 4321), "VSR_GID": str(os.getgid() or 4321)}
    compose = [DOCKER, "compose", "-f", str(DEPLOY / "compose.yaml"), "-p", "vsr-test"]
    try:
        up = subprocess.run([*compose, "up", "--build", "-d", "prometheus", "grafana"], env=env, capture_output=True, text=True, timeout=1800)
        assert up.returncode == 0, up.stderr
        run = subprocess.run([*compose, "up", "--build", "--exit-code-from", "vsr", "vsr"], env=env, capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert (media / "out.mp4").is_file()

        def get(url: str) -> str:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()

        deadline = time.monotonic() + 60
        while True:
            body = json.loads(get("http://127.0.0.1:9090/api/v1/query?query=max_over_time(vsr_frames_total%7Bstage%3D%22encode%22%7D%5B10m%5D)"))
            if body["data"]["result"] and float(body["data"]["result"][0]["value"][1]) == 25:
                break
            assert time.monotonic() < deadline, body
            time.sleep(2)
        rules = json.loads(get("http://127.0.0.1:9090/api/v1/rules"))
        assert {r["name"] for g in rules["data"]["groups"] for r in g["rules"]} >= ALERTS
        assert json.loads(get("http://127.0.0.1:3000/api/health"))["database"] == "ok"
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, timeout=300)
        for name in ("in.mp4", "out.mp4"):
            (media / name).unlink(missing_ok=True)


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
    assert re.search(r"pip install (\.|\"\.\"|\"\.\[cluster\]\")( |$|&)", runs)  # the package (with Ray for vsr batch)
    _common_dockerfile_checks(ins)


def test_dockerfile_cuda():
    ins = _instructions(DEPLOY / "Dockerfile.cuda")
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", ins[0][1] if ins[0][0] == "FROM" else "")
    runs = " ".join(r for op, r in ins if op == "RUN")
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in runs
    assert re.search(r"pip install \"\.\[cluster\]\"(\s|$)", runs)  # the project itself, with Ray for vsr batch
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


K8S_FILES = sorted(p.name for p in K8S.glob("*.yaml"))
#: Kinds that kubernetes-validate has no schema for (prometheus-operator and KubeRay CRDs): their
#: rule groups are checked by promtool (identical to alerts.yml) and their fields by the tests below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "RayJob"}
K8S_VERSION = "1.30.0"


@pytest.mark.parametrize("name", K8S_FILES)
def test_k8s_manifests_pass_schema_validation(name):
    """Every built-in object validates against the Kubernetes OpenAPI schema, strictly (an unknown
    or misspelt field is an error, as `kubectl apply --validate=strict` would say)."""
    for doc in _k8s_docs(name):
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_schema_validation_can_fail():
    dep = _k8s_docs("deployment.yaml")[0]
    typo = json.loads(json.dumps(dep))
    typo["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = typo["spec"]["template"]["spec"]["containers"][0]["livenessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong = json.loads(json.dumps(dep))
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)


def test_k8s_workloads():
    dep = _k8s_docs("deployment.yaml")[0]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for kind, tmpl in _pod_specs().items():
        spec = tmpl["spec"]
        if kind == "job":
            assert spec["restartPolicy"] in ("Never", "OnFailure")
        assert spec["securityContext"]["runAsNonRoot"] is True
        (c,) = spec["containers"]
        args = [str(a) for a in c["args"]]
        assert args[0] == ("upscale" if kind == "job" else "stream")
        assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
        assert args[args.index("--metrics-port") + 1] == str(METRICS_PORT)
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in c["ports"]
        res = c["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"]
        assert res["limits"]["cpu"] and res["limits"]["memory"]
        assert "nvidia.com/gpu" not in res["limits"], "GPU limit should stay a commented option"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert set(mounts) <= set(volumes)
        # the engine cache (ONNX exports, TensorRT engines) is a volume the pod's user can write
        cache = next(name for name, path in mounts.items() if path == "/app/engines/cache")
        assert "emptyDir" in volumes[cache] or "persistentVolumeClaim" in volumes[cache]
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
        if kind == "job":  # the last scrapes see it finish (VsrTargetDown leaves finished jobs alone)
            assert float(args[args.index("--metrics-linger") + 1]) >= 10
        if kind == "deployment":
            env = {e["name"]: e["value"] for e in c["env"]}
            assert "mode=listener" in env["VSR_INPUT"] and env["VSR_OUTPUT"].startswith("/media/")
            assert args[1:3] == ["$(VSR_INPUT)", "$(VSR_OUTPUT)"]
            assert args[args.index("--connect-timeout") + 1] == "0"  # a listener waits for its sender
            # liveness = the process works; readiness = able to take input (not /readyz, which
            # waits for input and would keep the input Service from ever routing to the pod)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
            assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
            assert any(p["protocol"] == "UDP" and p["name"] == "srt" for p in c["ports"])
            assert tmpl["metadata"]["labels"].get("channel")
            # first start: the engines built into the cache by the same image before the channel starts
            (init,) = spec["initContainers"]
            init_args = [str(a) for a in init["args"]]
            assert init["image"] == c["image"] and init_args[:2] == ["engines", "build"]
            sizes = {e["name"]: e["value"] for e in init["env"]}
            assert init_args[init_args.index("--input-size") + 1] == "$(VSR_INPUT_SIZE)" and re.fullmatch(r"\d+x\d+", sizes["VSR_INPUT_SIZE"])
            assert init_args[init_args.index("--weights") + 1] == "default" and "--weights" not in args  # what the channel runs
            assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]} == {cache: "/app/engines/cache"}
            assert init["securityContext"]["allowPrivilegeEscalation"] is False and "nvidia.com/gpu" not in init["resources"]["limits"]
    for name in ("job.yaml", "deployment.yaml"):
        assert re.search(r"#\s*nvidia\.com/gpu:\s*1", (K8S / name).read_text()), name


def test_k8s_input_service_reaches_the_live_channel():
    (svc,) = _k8s_docs("input-service.yaml")
    assert svc["kind"] == "Service"
    pod = _pod_specs()["deployment"]
    job = _pod_specs()["job"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert not svc["spec"]["selector"].items() <= job["metadata"]["labels"].items(), "input must not go to file jobs"
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p for p in c["ports"]}
    (port,) = svc["spec"]["ports"]
    target = ports[port["targetPort"]]
    assert port["protocol"] == target["protocol"] == "UDP"
    listen = next(e["value"] for e in c["env"] if e["name"] == "VSR_INPUT")
    assert f":{target['containerPort']}?" in listen


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
    # only the metrics Service: not the input Service
    (inp,) = _k8s_docs("input-service.yaml")
    assert not sm["spec"]["selector"]["matchLabels"].items() <= inp["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [port["name"]]
    assert sm["spec"]["endpoints"][0]["interval"] == "5s"
    assert set(sm["spec"]["endpoints"][0]) <= {"port", "path", "interval", "scrapeTimeout"}
    assert sm["spec"]["podTargetLabels"] == ["channel"]


def test_k8s_rayjob_runs_vsr_batch_on_the_shared_volume():
    """The KubeRay RayJob: its entrypoint is a `vsr batch` command line our own parser accepts,
    joining the job's Ray cluster; head and workers run our image, mount the same media claim,
    and every pod template is a valid Kubernetes pod spec (checked strictly, wrapped in a Pod)."""
    import shlex

    from vsr_pipeline.cli import build_parser

    (job,) = _k8s_docs("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "vsr"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.ray_address) == ("batch", "auto")
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", **template["metadata"]}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        (container,) = template["spec"]["containers"]
        assert container["image"].startswith("vsr-pipeline:")
        assert {"name": "media", "mountPath": "/media"} in container["volumeMounts"]
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in template["spec"]["volumes"]}
        assert claims["media"] == "vsr-media"
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        assert 'pip install ".[cluster]"' in (DEPLOY / dockerfile).read_text(), dockerfile  # Ray in the image


def test_compose_batch_profile_runs_vsr_batch_where_prometheus_scrapes():
    """`docker compose --profile batch up batch ...`: a `vsr batch` command line our parser
    accepts, metrics on the port Prometheus scrapes, reachable under the scraped name `vsr`."""
    from vsr_pipeline.cli import build_parser

    compose = load_yaml(DEPLOY / "compose.yaml")
    svc = compose["services"]["batch"]
    assert svc["profiles"] == ["batch"] and svc["image"] == compose["services"]["vsr"]["image"]
    args = build_parser().parse_args([str(c) for c in svc["command"]])
    assert (args.command, args.metrics_port, args.metrics_host) == ("batch", METRICS_PORT, "0.0.0.0")
    assert args.metrics_linger >= 10
    assert "vsr" in svc["networks"]["default"]["aliases"]
    targets = load_yaml(PROM / "prometheus.yml")["scrape_configs"][0]["static_configs"][0]["targets"]
    assert f"vsr:{METRICS_PORT}" in targets
    assert ("./media", "/media") in _bind_mounts(svc)
