"""config/kubernetes/ and config/compose/ are valid for their tools and agree with the sidecar
config they carry: ``kubernetes-validate --strict``, ``sidecar-run check`` (with ``--manifest``),
probes, scrape annotations, grace periods, ports and mounts; the pod's config also runs."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import io
import json
import math
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import trustme
import yaml

from sidecar_runtime import _commands as commands
from sidecar_runtime import parse_address, parse_duration
from sidecar_runtime._config import Config, load_config
from sidecar_runtime._plugins import PluginSpec, load_plugins
from sidecar_runtime._timing import STOP_MARGIN, recovery_seconds, stop_budget
from tests.conftest import ROOT, child_env, free_port, running_sidecar

KUBE = ROOT / "config" / "kubernetes"
COMPOSE = ROOT / "config" / "compose"
#: The oldest Kubernetes release the manifests claim (preStop-free, startupProbe, appProtocol)
#: and the newest one kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
VALIDATE = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def manifests() -> dict[str, dict[str, Any]]:
    """Every document of config/kubernetes/, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in documents(path):
            assert doc["kind"] not in found, f"{path.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


def embedded_config(tmp_path: Path) -> Path:
    """The ConfigMap's sidecar config, written to a file under the name the pod reads."""
    command = container()["command"]
    assert command[:2] == ["sidecar-run", "--config"]
    config_path = Path(command[2])
    path = tmp_path / config_path.name
    path.write_text(manifests()["ConfigMap"]["data"][config_path.name], encoding="utf-8")
    return path


def run_argv() -> list[str]:
    """sidecar-run's options and the app's argv, as the container's command and args give them,
    with the config path left to the caller."""
    command, args = container()["command"], container()["args"]
    assert command[-1] == "--", "the app's argv follows '--'"
    return [*command[3:], *args]


@pytest.fixture(autouse=True)
def _no_sidecar_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIDECAR_* variable of the test run reaches an in-process ``check``."""
    for name in [n for n in os.environ if n.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)


def check(*args: str) -> tuple[int, str, str]:
    """``sidecar-run check ARGS`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = commands.check(list(args))
    return code, out.getvalue(), err.getvalue()


def invoke_schema() -> tuple[int, str, str]:
    """``sidecar-run schema`` in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = commands.schema([])
    return code, out.getvalue(), err.getvalue()


def decoded(path: Path) -> tuple[Config, list[PluginSpec]]:
    """The config file decoded as sidecar-run decodes it (no SIDECAR_* environment)."""
    config = load_config(path, environ={})
    return config, load_plugins(config)


def plugin(specs: list[PluginSpec], name: str) -> Any:
    return next(spec.config for spec in specs if spec.name == name)


def port_of(address: str) -> int:
    port = parse_address(address).port
    assert isinstance(port, int)
    return port


def container_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    port = ports[name]
    assert isinstance(port, int)
    return port


# -- Kubernetes: the tools ------------------------------------------------------------------------


@pytest.mark.skipif(VALIDATE is None, reason="kubernetes-validate is not installed")
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict_accepts_every_manifest(version: str) -> None:
    """``kubernetes-validate --strict`` passes every file of config/kubernetes/; its strict
    schema rejects the Deployment with a misspelt field."""
    assert VALIDATE is not None
    files = sorted(str(p) for p in KUBE.glob("*.yaml"))
    assert {Path(f).name for f in files} == {"configmap.yaml", "deployment.yaml", "service.yaml"}
    result = subprocess.run(
        [VALIDATE, "--strict", "-k", version, *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == 3, result.stdout
    typo = documents(KUBE / "deployment.yaml")[0]
    typo["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 40
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(typo, version, strict=True)


def test_the_pod_config_passes_check_with_the_deployment_and_no_warning(tmp_path: Path) -> None:
    """``sidecar-run check --strict --config <the ConfigMap's file> --manifest deployment.yaml``
    with the container's own command line exits 0 and prints no warning."""
    config = embedded_config(tmp_path)
    code, out, err = check(
        "--strict", "--config", str(config), "--manifest", str(KUBE / "deployment.yaml"),
        *run_argv(),
    )  # fmt: skip
    assert (code, err) == (0, "")
    resolved = json.loads(out)
    assert resolved["app"]["command"] == container()["args"]
    assert set(resolved["plugins"]) == {"admin", "health", "metrics", "logs", "proxy"}


def test_the_pod_config_is_valid_under_the_printed_schema(tmp_path: Path) -> None:
    """The ConfigMap's config validates against ``sidecar-run schema`` (what an editor or CI
    checks it with), and a misspelt key in it does not."""
    code, out, err = invoke_schema()
    assert code == 0, err
    validator = jsonschema.Draft202012Validator(json.loads(out))
    data = yaml.safe_load(embedded_config(tmp_path).read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(data)] == []
    data["plugins"]["proxy"]["listeners"][0]["tls"]["client_auht"] = "strict"
    assert list(validator.iter_errors(data))


def test_check_manifest_warns_as_the_howto_shows_with_the_default_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the Deployment's terminationGracePeriodSeconds (30 s by default), ``check``
    prints the warning the Kubernetes how-to shows, and asks for at most the value the
    Deployment sets."""
    config = embedded_config(tmp_path)
    text = (KUBE / "deployment.yaml").read_text(encoding="utf-8")
    grace = pod_spec()["terminationGracePeriodSeconds"]
    default = text.replace(f"terminationGracePeriodSeconds: {grace}", "")
    assert default != text
    monkeypatch.chdir(tmp_path)
    Path("deployment.yaml").write_text(default, encoding="utf-8")
    code, _, err = check("--config", str(config), "--manifest", "deployment.yaml")
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    howto = (ROOT / "docs" / "how-to" / "kubernetes.md").read_text(encoding="utf-8")
    assert f"\n{warning}\n" in howto
    wanted = int(warning.rsplit("use terminationGracePeriodSeconds: ", 1)[1].split()[0])
    assert wanted <= grace


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_documented_tls_secret_command_makes_what_the_pod_mounts(tmp_path: Path) -> None:
    """The ``kubectl create secret`` command in deployment.yaml's comments, run with
    ``--dry-run=client``, makes a valid Secret with the name the pod mounts and every file the
    proxy reads."""
    lines = (KUBE / "deployment.yaml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   kubectl create secret"))
    text = ""
    for line in lines[start:]:
        text += line.removeprefix("#").strip().removesuffix("\\")
        if not line.endswith("\\"):
            break
    ca = trustme.CA()
    server = ca.issue_cert("legacy-app.default.svc")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    made = subprocess.run(
        [*shlex.split(text), "--dry-run=client", "-o", "yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    secret = yaml.safe_load(made.stdout)
    (tmp_path / "secret.yaml").write_text(made.stdout, encoding="utf-8")
    if VALIDATE is not None:
        result = subprocess.run(
            [VALIDATE, "--strict", "--quiet", str(tmp_path / "secret.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert secret["type"] == "kubernetes.io/tls"
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    secret_volumes = [name for name, v in volumes.items() if "secret" in v]
    assert [volumes[n]["secret"]["secretName"] for n in secret_volumes] == [
        secret["metadata"]["name"]
    ]
    (mount,) = [mounts[n] for n in secret_volumes]
    _, specs = decoded(embedded_config(tmp_path))
    tls = plugin(specs, "proxy").listeners[0].tls
    for path in (tls.cert, tls.key, tls.client_ca):
        assert Path(path).parent == Path(mount)
        assert Path(path).name in secret["data"]


# -- Kubernetes: the pod agrees with its config ---------------------------------------------------


def test_probes_ask_sidecar_run_and_outwait_its_own_restarts(tmp_path: Path) -> None:
    """Startup and liveness probes GET /livez, readiness GETs /readyz, all on the admin listener's
    port; the kubelet's liveness patience exceeds a restart in place and its startup patience
    covers the config's startup probe."""
    config, specs = decoded(embedded_config(tmp_path))
    admin = port_of(plugin(specs, "admin").listen)
    spec = container()
    paths = {kind: spec[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/livez", "livenessProbe": "/livez"}
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(spec[kind]["httpGet"]["port"]) == admin
    liveness = spec["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > recovery_seconds(config)
    startup = spec["startupProbe"]
    probes = [p for p in plugin(specs, "health").probes if p.kind == "startup"]
    assert probes, "the config has a startup probe"
    needed = max(p.initial_delay + p.failure_threshold * p.period for p in probes)
    assert startup["periodSeconds"] * startup["failureThreshold"] >= needed


def test_liveness_is_less_strict_than_readiness(tmp_path: Path) -> None:
    """The config's liveness probe gives up later than its readiness probe (no restart storm
    when a dependency is slow)."""
    _, specs = decoded(embedded_config(tmp_path))
    probes = {p.kind: p for p in plugin(specs, "health").probes}
    live, ready = probes["liveness"], probes["readiness"]
    assert live.failure_threshold * live.period > ready.failure_threshold * ready.period


def test_prometheus_annotations_name_the_metrics_listener(tmp_path: Path) -> None:
    """The pod's prometheus.io/* annotations point at the metrics plugin's port and path."""
    _, specs = decoded(embedded_config(tmp_path))
    metrics = plugin(specs, "metrics")
    template = manifests()["Deployment"]["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == metrics.path == "/metrics"
    assert int(notes["prometheus.io/port"]) == port_of(metrics.listen)
    assert container_port("metrics") == port_of(metrics.listen)


def test_grace_period_exceeds_the_stop_budget(tmp_path: Path) -> None:
    """terminationGracePeriodSeconds covers sidecar-run's worst-case stop plus the margin, and
    no preStop hook eats into it."""
    config, _ = decoded(embedded_config(tmp_path))
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= math.ceil(stop_budget(config) + STOP_MARGIN)
    assert grace > config.stop.timeout
    assert "lifecycle" not in container()


def test_the_service_targets_the_proxy(tmp_path: Path) -> None:
    """The Service selects the pods and sends its port to the proxy's listener, not to the app
    or the admin listener."""
    _, specs = decoded(embedded_config(tmp_path))
    proxy = plugin(specs, "proxy")
    service = manifests()["Service"]
    labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert container_port(port["targetPort"]) == port_of(proxy.listeners[0].address)
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert proxy.upstreams["app"].endpoints == [f"127.0.0.1:{env['LEGACY_APP_PORT']}"]


def test_config_and_tls_volumes_are_mounted_where_the_config_reads_them(tmp_path: Path) -> None:
    """The ConfigMap is mounted where --config points, the TLS Secret where the listener's files
    are, the logs plugin's state_dir on a writable volume."""
    _, specs = decoded(embedded_config(tmp_path))
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    config_dir = str(Path(container()["command"][2]).parent)
    assert (
        volumes[mounts[config_dir]["name"]]["configMap"]["name"]
        == (manifests()["ConfigMap"]["metadata"]["name"])
    )
    tls = plugin(specs, "proxy").listeners[0].tls
    tls_mount = mounts[str(Path(tls.cert).parent)]
    assert tls_mount["readOnly"] is True
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == "legacy-app-tls"
    state = mounts[plugin(specs, "logs").state_dir]
    assert not state.get("readOnly", False)
    assert "emptyDir" in volumes[state["name"]]


def test_istio_shapes_are_proxy_config(tmp_path: Path) -> None:
    """PeerAuthentication STRICT is a listener requiring client certificates; the
    VirtualService's prefix route with rewrite, timeout and retries comes first; the
    DestinationRule's ISTIO_MUTUAL is upstream mTLS with outlier detection."""
    _, specs = decoded(embedded_config(tmp_path))
    proxy = plugin(specs, "proxy")
    tls = proxy.listeners[0].tls
    assert (tls.client_auth, tls.client_ca) == ("strict", "/tls/ca.crt")
    first, *_, last = proxy.routes
    assert (first.match.prefix, first.upstream, first.rewrite_prefix) == (
        "/reviews/",
        "reviews",
        "/v2/reviews/",
    )
    assert first.timeout == 5.0
    assert first.retry is not None
    assert first.retry.attempts == 3
    assert (last.match.prefix, last.upstream) == (None, "app")
    reviews = proxy.upstreams["reviews"]
    assert reviews.tls is not None
    assert (reviews.tls.cert, reviews.tls.key) == (tls.cert, tls.key)
    assert reviews.outlier is not None
    text = (KUBE / "configmap.yaml").read_text(encoding="utf-8")
    for field in ("mtls.mode: STRICT", "uri.prefix", "rewrite.uri", "ISTIO_MUTUAL", "retries"):
        assert field in text, f"the comments map Istio's {field}"


# -- Compose --------------------------------------------------------------------------------------

#: The Compose Specification's keys that these files may use (a misspelt key fails here).
SERVICE_KEYS = {
    "build", "image", "entrypoint", "command", "init", "user", "read_only", "tmpfs",
    "environment", "env_file", "ports", "expose", "volumes", "stop_signal", "stop_grace_period",
    "restart", "healthcheck", "depends_on", "networks", "labels", "logging", "cap_drop",
    "security_opt", "working_dir", "secrets", "configs",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}


def compose() -> dict[str, Any]:
    (doc,) = documents(COMPOSE / "docker-compose.yml")
    return doc


def app_service() -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"]["legacy-app"]
    return service


def compose_config() -> Path:
    """The host file mounted where the service's --config points."""
    service = app_service()
    entry = service["entrypoint"]
    assert entry[:2] == ["sidecar-run", "--config"]
    assert entry[-1] == "--"
    sources = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    return (COMPOSE / str(sources[entry[2]])).resolve()


def test_compose_file_is_well_formed() -> None:
    """Known top-level and service keys only; every named volume, network and dependency is
    declared; the build context holds the Dockerfile."""
    doc = compose()
    assert set(doc) <= {"name", "services", "networks", "volumes"}
    assert "version" not in doc  # obsolete in the Compose Specification
    for name, service in doc["services"].items():
        assert set(service) <= SERVICE_KEYS, name
        assert set(service.get("networks", [])) <= set(doc["networks"]), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists() or source == "./tls", volume
            else:
                assert source in doc["volumes"], volume
        assert set(service.get("depends_on", {})) <= set(doc["services"]), name
    build = app_service()["build"]
    assert (COMPOSE / build["context"] / "Dockerfile").is_file()


def test_compose_service_runs_sidecar_run_with_its_config() -> None:
    """The entrypoint runs sidecar-run as PID 1 with the mounted config, the command is the
    app, and ``check --strict`` accepts the config with that command line."""
    service = app_service()
    assert service["init"] is False
    config = compose_config()
    assert config.is_file()
    code, out, err = check("--strict", "--config", str(config), "--", *service["command"])
    assert (code, err) == (0, "")
    assert json.loads(out)["app"]["command"] == service["command"]


def test_compose_healthcheck_and_stop_fit_the_config() -> None:
    """The healthcheck GETs /readyz on the admin port and waits at least the startup probe's
    budget; stop_signal is SIGTERM and stop_grace_period covers the worst-case stop."""
    service = app_service()
    config, specs = decoded(compose_config())
    check_ = service["healthcheck"]
    assert set(check_) <= HEALTHCHECK_KEYS
    admin = port_of(plugin(specs, "admin").listen)
    assert f"http://127.0.0.1:{admin}/readyz" in " ".join(check_["test"])
    probes = [p for p in plugin(specs, "health").probes if p.kind == "startup"]
    needed = max(p.initial_delay + p.failure_threshold * p.period for p in probes)
    assert parse_duration(check_["start_period"]) >= needed
    assert service["stop_signal"] == "SIGTERM"
    grace = parse_duration(service["stop_grace_period"])
    assert grace >= stop_budget(config) + STOP_MARGIN


def test_compose_ports_and_mounts_match_the_config() -> None:
    """The proxy's port is published, admin and metrics only on the host's loopback; the TLS
    directory and the logs state volume are mounted where the config reads them; Loki and
    Prometheus reach the app by service name."""
    service = app_service()
    _, specs = decoded(compose_config())
    proxy, logs = plugin(specs, "proxy"), plugin(specs, "logs")
    published = {int(p.rsplit(":", 1)[1]): p for p in service["ports"]}
    assert published[port_of(proxy.listeners[0].address)].count(":") == 1
    for name in ("admin", "metrics"):
        assert published[port_of(plugin(specs, name).listen)].startswith("127.0.0.1:")
    targets = {v.split(":")[1]: v for v in service["volumes"]}
    assert targets[str(Path(proxy.listeners[0].tls.cert).parent)].endswith(":ro")
    assert targets[logs.state_dir].split(":")[0] in compose()["volumes"]
    (loki,) = logs.outputs.values()
    assert loki.url.split("//")[1].split(":")[0] in compose()["services"]
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    metrics = plugin(specs, "metrics")
    assert job["static_configs"][0]["targets"] == [f"legacy-app:{port_of(metrics.listen)}"]
    assert job["metrics_path"] == metrics.path


def test_compose_and_kubernetes_share_the_sidecar_settings(tmp_path: Path) -> None:
    """The Compose config keeps the pod's restart and stop settings, probes, listeners and
    plugin set: the same setup on one host."""
    kube, kube_specs = decoded(embedded_config(tmp_path))
    host, host_specs = decoded(compose_config())
    assert (kube.restart, kube.stop) == (host.restart, host.stop)
    assert [s.name for s in kube_specs] == [s.name for s in host_specs]
    for name in ("admin", "health", "metrics"):
        assert plugin(kube_specs, name) == plugin(host_specs, name), name
    kube_proxy, host_proxy = plugin(kube_specs, "proxy"), plugin(host_specs, "proxy")
    assert kube_proxy.listeners == host_proxy.listeners
    assert kube_proxy.upstreams["app"] == host_proxy.upstreams["app"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_compose_prometheus_config_passes_promtool() -> None:
    """``promtool check config`` accepts the Prometheus config of the Compose setup."""
    result = subprocess.run(
        ["promtool", "check", "config", str(COMPOSE / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the pod's config, run ------------------------------------------------------------------------


class _Loki(http.server.BaseHTTPRequestHandler):
    """Records every push: Loki's API is the only peer the pod's config talks to."""

    pushes: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.pushes.append({"path": self.path, "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def loki() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    pushes: list[dict[str, Any]] = []
    handler = type("Loki", (_Loki,), {"pushes": pushes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pushes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def _fetch(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/")
    return conn.getresponse().status


def _wait_ready(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail("not ready in time")


@pytest.mark.slow
def test_the_pod_config_runs_probes_mtls_metrics_and_ships_logs(
    tmp_path: Path, loki: tuple[str, list[dict[str, Any]]]
) -> None:
    """The ConfigMap's config, with loopback ports, the trustme CA's certificates in place of
    the Secret, and a recording Loki: /readyz and /livez pass, the proxy serves the app to a
    client with a certificate and refuses one without, /metrics counts it, and on SIGTERM the
    proxy drains before the app is stopped and the app's lines reach Loki with pod metadata."""
    url, pushes = loki
    ports = {name: free_port() for name in ("admin", "metrics", "proxy", "app")}
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    (tls_dir / "tls.crt").write_bytes(chain)
    server.private_key_pem.write_to_path(str(tls_dir / "tls.key"))
    ca.cert_pem.write_to_path(str(tls_dir / "ca.crt"))
    text = embedded_config(tmp_path).read_text(encoding="utf-8")
    for old, new in {
        "0.0.0.0:9901": f"127.0.0.1:{ports['admin']}",
        '":9100"': f'"127.0.0.1:{ports["metrics"]}"',
        "0.0.0.0:8443": f"127.0.0.1:{ports['proxy']}",
        "127.0.0.1:8080": f"127.0.0.1:{ports['app']}",
        "/tls/": f"{tls_dir}/",
        "/var/lib/sidecar-run": str(tmp_path / "state"),
        "http://loki.monitoring.svc.cluster.local:3100": url,
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "pod.yaml"
    config.write_text(text, encoding="utf-8")
    env = child_env(
        LEGACY_APP_PORT=str(ports["app"]), POD_NAME="legacy-app-7d9f-x2x", POD_NAMESPACE="shop"
    )
    args = [sys.executable if a == "python" else a for a in container()["args"]]
    argv = ["--config", str(config), "--pre-stop-delay", "0s", "--", *args]
    with running_sidecar(argv, env=env) as proc:
        _wait_ready(ports["admin"], proc, time.monotonic() + 30)
        assert _get(ports["admin"], "/livez") == (200, "ok\n")
        client = ssl.create_default_context()
        ca.configure_trust(client)
        ca.issue_cert("client.shop.svc").configure_cert(client)
        conn = http.client.HTTPSConnection("localhost", ports["proxy"], context=client, timeout=5)
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b"hello from a legacy app\n")
        conn.close()
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        conn = http.client.HTTPSConnection("localhost", ports["proxy"], context=anonymous)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _fetch(conn)
        conn.close()
        status, metrics = _get(ports["metrics"], "/metrics")
        assert status == 200
        assert 'sidecar_proxy_requests_total{code_class="2xx"' in metrics
        assert "sidecar_app_up 1.0" in metrics
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line[:1] == "{"]
    assert events.index("proxy_drained") < events.index("app_stop_signalled")
    assert "logs_drained" in events
    lines = [
        json.loads(value[1])
        for push in pushes
        for stream in push["body"]["streams"]
        if stream["stream"]["job"] == "legacy-app"
        for value in stream["values"]
    ]
    listening = [r for r in lines if "legacy app listening" in r.get("message", "")]
    assert listening, lines
    assert listening[0]["kubernetes"]["pod_name"] == "legacy-app-7d9f-x2x"
    assert listening[0]["kubernetes"]["namespace_name"] == "shop"
