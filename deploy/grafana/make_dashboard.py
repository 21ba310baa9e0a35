"""Write deploy/grafana/dashboards/vsr.json, the "VSR pipeline" Grafana dashboard.

    python3 deploy/grafana/make_dashboard.py          # rewrites the JSON
    python3 deploy/grafana/make_dashboard.py --check  # exit 1 if the JSON is not what this writes

The dashboard is written from this file so that its ~40 queries stay consistent (one selector,
one layout grid); tests/test_deploy.py checks the JSON is up to date, that every metric the
program registers is on it (or in :data:`LEFT_OFF`), and that every query parses and names a
metric that exists. Rows: overview (file jobs and channels alike), live channel, faces, batch, throughput
and latency, queues and errors. Variables: data source, channel (the `channel` target label), and
instance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "vsr.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
#: Every query selects the chosen channels and instances of job "vsr".
SEL = 'job="vsr",channel=~"$channel",instance=~"$instance"'

#: Metric families the program registers that are deliberately not on the dashboard (name ->
#: why). tests/test_deploy.py fails on a registered family that is neither here nor on it.
LEFT_OFF: dict[str, str] = {}


def sel(extra: str = "") -> str:
    return "{" + SEL + ("," + extra if extra else "") + "}"


ENCODE = sel('stage="encode"')
UPSCALED = sel('kind="upscaled"')


def target(ref: str, expr: str, legend: str, *, instant: bool = False) -> dict:
    return {
        "datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend,
        "range": not instant, "instant": instant, "format": "time_series", "editorMode": "code",
    }


def thresholds(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


_GREEN = thresholds(("green", None))


class Layout:
    """Hands out panel ids and grid positions, row by row."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.y = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def add(self, panel: dict, x: int, w: int, h: int, dy: int = 0) -> None:
        panel = {"id": self._id(), **panel}
        panel["gridPos"] = {"x": x, "y": self.y + dy, "w": w, "h": h}
        self.panels.append(panel)

    def advance(self, h: int) -> None:
        self.y += h

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def stat(title: str, description: str, targets: list[dict], *, unit: str = "short", steps=_GREEN, mappings=None, text_mode: str = "value", color_mode: str = "value", decimals: int | None = None, no_value: str | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"}, "mappings": mappings or [], "thresholds": steps, "unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": color_mode, "graphMode": "none",
            "justifyMode": "auto", "orientation": "auto", "textMode": text_mode, "wideLayout": True, "showPercentChange": False,
        },
    }


def gauge(title: str, description: str, targets: list[dict], *, unit: str, steps, minimum: float, maximum: float, decimals: int = 1, no_value: str | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"}, "mappings": [], "thresholds": steps, "unit": unit, "min": minimum, "max": maximum, "decimals": decimals}
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "gauge", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "showThresholdLabels": False,
            "showThresholdMarkers": True, "minVizHeight": 75, "minVizWidth": 75, "sizing": "auto",
        },
    }


def dashed(*names: str) -> list[dict]:
    return [
        {"matcher": {"id": "byName", "options": n}, "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.fillOpacity", "value": 0}]}
        for n in names
    ]


def timeseries(title: str, description: str, targets: list[dict], *, unit: str = "short", overrides=None, stack: str = "none", draw: str = "line", interpolation: str = "linear", soft_max: float | None = None, maximum: float | None = None) -> dict:
    custom = {
        "drawStyle": draw, "lineWidth": 1, "fillOpacity": 60 if stack != "none" else 10, "showPoints": "never", "spanNulls": False,
        "axisPlacement": "auto", "axisSoftMin": 0, "stacking": {"mode": stack, "group": "A"}, "gradientMode": "none",
        "lineInterpolation": interpolation, "barAlignment": 0, "pointSize": 5, "scaleDistribution": {"type": "linear"},
        "thresholdsStyle": {"mode": "off"}, "hideFrom": {"legend": False, "tooltip": False, "viz": False},
    }
    if soft_max is not None:
        custom["axisSoftMax"] = soft_max
    defaults = {"color": {"mode": "palette-classic"}, "mappings": [], "thresholds": _GREEN, "unit": unit, "custom": custom}
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _state_mappings(on: str, off: str) -> list[dict]:
    return [{"type": "value", "options": {"1": {"text": on, "color": "green", "index": 0}, "0": {"text": off, "color": "red", "index": 1}}}]


def panels() -> list[dict]:
    L = Layout()
    fps = "suffix: fps"

    # -- overview: file jobs and live channels ---------------------------------------------------
    L.row("Overview")
    L.add(gauge("Progress", "File jobs: encoded frames / frames the input is expected to have. No value for a live channel or when the input length is unknown (vsr_input_frames = 0).",
                [target("A", f'vsr_frames_total{ENCODE} / on(job, instance) (vsr_input_frames{sel()} > 0)', "{{instance}}")],
                unit="percentunit", steps=thresholds(("blue", None), ("green", 1)), minimum=0, maximum=1, no_value="unknown length"), 0, 5, 6)
    L.add(gauge("Network throughput", "Frames upscaled by the network and written per second, over the last 5 s (vsr_throughput_fps). Lanczos fallbacks and repeated frames are not counted, so a live channel whose network cannot keep up shows it here. Thresholds for 25 fps content.",
                [target("A", f"vsr_throughput_fps{sel()}", "{{instance}}")],
                unit=fps, steps=thresholds(("red", None), ("orange", 20), ("green", 25)), minimum=0, maximum=60), 5, 5, 6)
    L.add(stat("Backend", "Inference backend and device in use (vsr_backend_info). VsrBackendFellBackToCPU fires when a channel that ran on a GPU runs on the CPU.",
               [target("A", f"vsr_backend_info{sel()}", "{{backend}} on {{device}}", instant=True)], text_mode="name", color_mode="none"), 10, 6, 3)
    L.add(stat("Model MACs / frame", "Multiply-accumulates the model needs per output frame (file jobs).",
               [target("A", f"vsr_model_macs_per_frame{sel()}", "{{instance}}", instant=True)]), 16, 4, 3)
    L.add(stat("Scene cuts", "Scene cuts detected so far (the temporal window is reset at each).",
               [target("A", f"sum(vsr_scene_cuts_total{sel()})", "scene cuts", instant=True)]), 20, 4, 3)
    L.add(stat("Encoded frames", "Frames encoded so far, whatever made them, and frames the input is expected to have (0 = unknown or live).",
               [target("A", f'sum(vsr_frames_total{ENCODE})', "encoded", instant=True),
                target("B", f"sum(vsr_input_frames{sel()})", "expected", instant=True)], text_mode="value_and_name"), 10, 6, 3, dy=3)
    L.add(stat("Frames in temporal window", "Frames held by the temporal window now.",
               [target("A", f"vsr_window_frames{sel()}", "{{instance}}", instant=True)]), 16, 4, 3, dy=3)
    L.add(stat("Errors (total)", "Errors by all stages so far (vsr_errors_total).",
               [target("A", f"sum(vsr_errors_total{sel()}) or vector(0)", "errors", instant=True)], steps=thresholds(("green", None), ("red", 1))), 20, 4, 3, dy=3)
    L.advance(6)

    # -- live channel ------------------------------------------------------------------------
    L.row("Live channel")
    L.add(stat("Input", "vsr_input_connected: input frames arriving (1) or not (0: stalled, disconnected, or waiting for the first connection). VsrInputStalled fires after 10 s at 0.",
               [target("A", f"vsr_input_connected{sel()}", "{{instance}}", instant=True)], mappings=_state_mappings("receiving", "NO INPUT"),
               steps=thresholds(("red", None), ("green", 1)), color_mode="background", no_value="not live"), 0, 4, 4)
    L.add(stat("Output", "vsr_output_connected: the output is open (1) or down and reconnecting (0). No value before the output is first opened. VsrOutputDown fires after 10 s at 0.",
               [target("A", f"vsr_output_connected{sel()}", "{{instance}}", instant=True)], mappings=_state_mappings("sending", "DOWN"),
               steps=thresholds(("red", None), ("green", 1)), color_mode="background", no_value="not open"), 4, 4, 4)
    L.add(stat("Latency budget", "The configured end-to-end latency budget (--latency): every frame is sent this long after it was decoded.",
               [target("A", f"vsr_latency_budget_seconds{sel()}", "{{instance}}", instant=True)], unit="s", decimals=2), 8, 4, 4)
    L.add(stat("Input bitrate", "Input bitrate over the last 5 s (vsr_input_bitrate_bps).",
               [target("A", f"vsr_input_bitrate_bps{sel()}", "{{instance}}", instant=True)], unit="bps", steps=thresholds(("red", None), ("green", 1))), 12, 4, 4)
    L.add(stat("Upscaled by the network (5m)", "Share of the frames sent in the last 5 minutes that the network made (the rest: Lanczos fallback, or repeated while the input stalled). VsrFramesNotUpscaled fires when the Lanczos share passes 10 %.",
               [target("A", f'sum(rate(vsr_output_frames_total{UPSCALED}[5m])) / sum(rate(vsr_output_frames_total{sel()}[5m]))', "upscaled", instant=True)],
               unit="percentunit", decimals=1, steps=thresholds(("red", None), ("orange", 0.5), ("green", 0.9))), 16, 4, 4)
    L.add(stat("Input stalls / reconnects", "Input stalls (and disconnects) and input connections re-established, since the process started.",
               [target("A", f"sum(vsr_input_stalls_total{sel()})", "stalls", instant=True), target("B", f"sum(vsr_input_reconnects_total{sel()})", "reconnects", instant=True)],
               text_mode="value_and_name"), 20, 4, 4)
    L.advance(4)
    L.add(timeseries("End-to-end latency vs budget", "Input frame decoded -> its output frame sent, p50 and p99 over 1 minute (vsr_end_to_end_latency_seconds), against the budget (dashed). By design a frame is sent one budget after it arrived; VsrLatencyOverBudget fires when p99 over 5 minutes passes 1.25 x the budget.",
                     [target("A", f"histogram_quantile(0.5, sum by (le, instance) (rate(vsr_end_to_end_latency_seconds_bucket{sel()}[1m])))", "{{instance}} p50"),
                      target("B", f"histogram_quantile(0.99, sum by (le, instance) (rate(vsr_end_to_end_latency_seconds_bucket{sel()}[1m])))", "{{instance}} p99"),
                      target("C", f"vsr_latency_budget_seconds{sel()}", "{{instance}} budget")],
                     unit="s", overrides=[{"matcher": {"id": "byRegexp", "options": ".* budget"}, "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.fillOpacity", "value": 0}, {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]), 0, 12, 8)
    L.add(timeseries("Frames sent: network / Lanczos / repeated", "Share of the frames sent, by how they were made (vsr_output_frames_total{kind}): upscaled by the network, classical (the Lanczos fallback: the network could not finish them in time), repeated (the slate while the input stalled). Stacked to 100 %.",
                     [target("A", f"sum by (kind) (rate(vsr_output_frames_total{sel()}[1m])) / ignoring(kind) group_left() sum(rate(vsr_output_frames_total{sel()}[1m]))", "{{kind}}")],
                     unit="percentunit", stack="normal", maximum=1,
                     overrides=[{"matcher": {"id": "byName", "options": k}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]} for k, c in (("upscaled", "green"), ("classical", "orange"), ("repeated", "red"))]), 12, 12, 8)
    L.advance(8)
    L.add(timeseries("Degraded frames by reason", "Frames per second not upscaled by the network with its full window (vsr_frames_degraded_total): engine_late and queue_full went out classical (Lanczos), short_window through the network with window 1.",
                     [target("A", f"sum by (reason) (rate(vsr_frames_degraded_total{sel()}[1m]))", "{{reason}}")], unit=fps), 0, 8, 8)
    L.add(timeseries("Dropped frames by reason", "Input frames never sent, per minute (vsr_frames_dropped_total): duplicate_slot (the sender's clock runs fast or restarted), output_behind (the playout fell behind), output_down (the receiver was gone).",
                     [target("A", f"sum by (reason) (increase(vsr_frames_dropped_total{sel()}[1m]))", "{{reason}}")]), 8, 8, 8)
    L.add(timeseries("Input bitrate", "Input bitrate over 5 s (vsr_input_bitrate_bps) and the 1-minute average from vsr_input_bytes_total (dashed).",
                     [target("A", f"vsr_input_bitrate_bps{sel()}", "{{instance}}"), target("B", f"8 * rate(vsr_input_bytes_total{sel()}[1m])", "{{instance}} 1m average")],
                     unit="bps", overrides=[{"matcher": {"id": "byRegexp", "options": ".* 1m average"}, "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.fillOpacity", "value": 0}]}]), 16, 8, 8)
    L.advance(8)
    L.add(timeseries("Connection state", "Input receiving (vsr_input_connected) and output open (vsr_output_connected): 1 = up, 0 = down.",
                     [target("A", f"vsr_input_connected{sel()}", "{{instance}} input"), target("B", f"vsr_output_connected{sel()}", "{{instance}} output")],
                     interpolation="stepAfter", soft_max=1.2), 0, 12, 8)
    L.add(timeseries("Stalls and reconnects", "Per minute: input stalls and disconnects (vsr_input_stalls_total), input connections re-established (vsr_input_reconnects_total), output connections re-established (vsr_output_reconnects_total).",
                     [target("A", f"sum(increase(vsr_input_stalls_total{sel()}[1m]))", "input stalls"),
                      target("B", f"sum(increase(vsr_input_reconnects_total{sel()}[1m]))", "input reconnects"),
                      target("C", f"sum(increase(vsr_output_reconnects_total{sel()}[1m]))", "output reconnects")]), 12, 12, 8)
    L.advance(8)

    # -- faces ---------------------------------------------------------------------------------
    L.row("Faces (--faces)")
    L.add(timeseries("Faces detected", "Faces found by the face detector per second (vsr_faces_detected_total; the detector runs every --face-every frames).",
                     [target("A", f"sum by (instance) (rate(vsr_faces_detected_total{sel()}[1m]))", "{{instance}}")]), 0, 8, 8)
    L.add(timeseries("Face tracks", "Face tracks alive (vsr_face_tracks).",
                     [target("A", f"vsr_face_tracks{sel()}", "{{instance}}")]), 8, 8, 8)
    L.add(timeseries("Face engine time per frame", "Time the face engine spent on one frame, p50 and p99 over 1 minute (vsr_face_latency_seconds).",
                     [target("A", f"histogram_quantile(0.5, sum by (le, instance) (rate(vsr_face_latency_seconds_bucket{sel()}[1m])))", "{{instance}} p50"),
                      target("B", f"histogram_quantile(0.99, sum by (le, instance) (rate(vsr_face_latency_seconds_bucket{sel()}[1m])))", "{{instance}} p99")], unit="s"), 16, 8, 8)
    L.advance(8)

    # -- batch ---------------------------------------------------------------------------------
    L.row("Batch (vsr batch)")
    L.add(timeseries("Batch files", "Files of the batch (vsr_batch_input_files) and files finished so far by status (vsr_batch_files_total: done, failed, skipped because an earlier run finished them).",
                     [target("A", f"sum(vsr_batch_input_files{sel()})", "files in the batch"),
                      target("B", f"sum by (status) (vsr_batch_files_total{sel()})", "{{status}}")], overrides=dashed("files in the batch")), 0, 8, 8)
    L.add(timeseries("Batch frames", "Frames per second written across all workers (vsr_batch_throughput_fps), and the share of the batch's frames done (vsr_batch_frames_total / vsr_batch_input_frames).",
                     [target("A", f"sum(vsr_batch_throughput_fps{sel()})", "frames/s"),
                      target("B", f"sum(vsr_batch_frames_total{sel()}) / sum(vsr_batch_input_frames{sel()})", "share done")]), 8, 8, 8)
    L.add(timeseries("Batch workers", "Files or chunks being upscaled now (vsr_batch_chunks_in_flight) against the bound of the parallelism (vsr_batch_workers, --workers).",
                     [target("A", f"sum(vsr_batch_chunks_in_flight{sel()})", "in flight"), target("B", f"sum(vsr_batch_workers{sel()})", "workers")],
                     overrides=dashed("workers")), 16, 8, 8)
    L.advance(8)

    # -- throughput and latency --------------------------------------------------------------
    L.row("Throughput and latency")
    L.add(timeseries("Frames per second by stage", "rate(vsr_frames_total[30s]) per stage; the stage that lags the others is the bottleneck. On a live channel, encode runs at the input rate whatever made the frames: the network's own rate is the dashed line (vsr_throughput_fps).",
                     [target("A", f"sum by (stage) (rate(vsr_frames_total{sel()}[30s]))", "{{stage}}"), target("B", f"sum(vsr_throughput_fps{sel()})", "network throughput")],
                     unit=fps, overrides=dashed("network throughput")), 0, 12, 9)
    L.add(timeseries("Stage latency p50 / p95 / p99", "Per-frame latency of each stage, from vsr_stage_latency_seconds.",
                     [target(r, f"histogram_quantile({q}, sum by (le, stage) (rate(vsr_stage_latency_seconds_bucket{sel()}[1m])))", f"{{{{stage}}}} p{p}") for r, q, p in (("A", "0.5", "50"), ("B", "0.95", "95"), ("C", "0.99", "99"))],
                     unit="s"), 12, 12, 9)
    L.advance(9)
    L.add(timeseries("Mean stage latency", "Mean time per frame in each stage over 1 minute.",
                     [target("A", f"sum by (stage) (rate(vsr_stage_latency_seconds_sum{sel()}[1m])) / sum by (stage) (rate(vsr_stage_latency_seconds_count{sel()}[1m]))", "{{stage}}")], unit="s"), 0, 12, 8)
    L.add(timeseries("Frames in temporal window", "Frames held in the temporal window; drops at scene cuts.",
                     [target("A", f"vsr_window_frames{sel()}", "{{instance}}")]), 12, 12, 8)
    L.advance(8)

    # -- queues, errors, scene cuts --------------------------------------------------------------
    L.row("Queues, errors, input damage")
    L.add(timeseries("Queue depth vs capacity", "A queue that stays full means the stage consuming it is the bottleneck (decoded -> upscale, upscaled -> encode; sr -> the network of a live channel).",
                     [target("A", f"vsr_queue_depth{sel()}", "{{queue}} depth"), target("B", f"vsr_queue_capacity{sel()}", "{{queue}} capacity")],
                     overrides=[{"matcher": {"id": "byRegexp", "options": ".* capacity"}, "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.fillOpacity", "value": 0}]}]), 0, 8, 8)
    L.add(timeseries("Errors by stage / kind", "Errors per minute, by stage and kind.",
                     [target("A", f"sum by (stage, kind) (increase(vsr_errors_total{sel()}[1m]))", "{{stage}} / {{kind}}")]), 8, 8, 8)
    L.add(timeseries("Scene cuts", "Scene cuts per minute.",
                     [target("A", f"sum(increase(vsr_scene_cuts_total{sel()}[1m]))", "scene cuts / min")]), 16, 8, 8)
    L.advance(8)
    L.add(timeseries("Input damage by stream / kind", "Damage found in the input per minute (vsr_input_damage_total): packets dropped, pictures concealed or undecodable, frames missing, by stream and kind.",
                     [target("A", f"sum by (stream, kind) (increase(vsr_input_damage_total{sel()}[1m]))", "{{stream}} / {{kind}}")]), 0, 12, 8)
    L.add(timeseries("Input changes", "Pictures per minute of another size or pixel format than the first, fitted into the output (vsr_input_changes_total).",
                     [target("A", f"sum by (kind) (increase(vsr_input_changes_total{sel()}[1m]))", "{{kind}}")]), 12, 12, 8)
    L.advance(8)
    return L.panels


def variable_query(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2, "regex": "", "sort": 1, "hide": 0, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
    }


def dashboard() -> dict:
    return {
        "id": None,
        "uid": "vsr-pipeline",
        "title": "VSR pipeline",
        "description": "Streaming video super-resolution: file jobs (vsr upscale) and live channels (vsr stream): network vs fallback frames, latency against the budget, input and output health, faces, stages, queues, errors.",
        "tags": ["vsr"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "fiscalYearStartMonth": 0,
        "schemaVersion": 39,
        "version": 2,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": [
            {
                "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "refresh": 1, "regex": "",
                "hide": 0, "includeAll": False, "multi": False, "current": {"selected": False, "text": "Prometheus", "value": "prometheus"}, "options": [],
            },
            variable_query("channel", "Channel", 'label_values(up{job="vsr"}, channel)'),
            variable_query("instance", "Instance", 'label_values(up{job="vsr",channel=~"$channel"}, instance)'),
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
