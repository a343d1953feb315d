"""Services that are down or unusable: one line naming what and what to do, exit status 2, nothing trained or
written; a tracking server that is down within 15 s. Every server here binds 127.0.0.1 only."""

import contextlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from stilts import cli, tracking
from stilts.errors import StiltsError
from stilts.tracking import service
from tests.commands import BIN, run
from tests.commands import free_port as closed_port
from tests.conftest import tiny_params_dict

KIND = ("mlflow.experimentKind", "custom_model_development")


@pytest.fixture
def project(tmp_path, tiny_model):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model), sort_keys=False))
    (tmp_path / "published.csv").write_text("restart,source,task,role,score\n0,none,rte,target,0.6\n")
    runtime = tmp_path.parent / f"{tmp_path.name}-runtime"  # a private folder for a cell server, if one starts
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "STILTS_"))}
    return tmp_path, env | {"XDG_RUNTIME_DIR": str(runtime), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def stilts(root: Path, env: dict, *argv, module: str = "stilts"):
    start = time.monotonic()
    out = run(root, sys.executable, "-m", module, *argv, check=False, env=env, timeout=120)
    return out.returncode, out.stderr.strip(), out.stdout, time.monotonic() - start


TRACKED = [["intermediate", "--task", "syn_nli"], ["transfer", "--source", "none", "--task", "syn_rte"],
           ["sweep", "--task", "syn_rte"], ["analyze"], ["rank", "--targets", "syn_rte"],
           ["import-results", "published.csv", "--experiment", "published"], ["study"]]


@pytest.mark.parametrize("argv", TRACKED, ids=[a[0] for a in TRACKED])
def test_a_tracking_server_that_is_down_stops_each_command_at_once(project, argv):
    root, env = project
    uri = f"http://127.0.0.1:{closed_port()}"
    before = files(root)
    code, err, out, seconds = stilts(root, env | {"MLFLOW_TRACKING_URI": uri}, *argv)
    assert code == 2 and len(err.splitlines()) == 1 and not out, err
    assert err == (f"stilts: error: MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer (connection "
                   f"refused); start it (`stilts server --port {uri.rsplit(':', 1)[1]}`) or set MLFLOW_TRACKING_URI "
                   "to a running server")
    assert seconds < 15
    assert files(root) == before  # nothing prepared, trained or logged


def test_the_mlproject_entry_point_checks_before_its_first_step(project):
    root, env = project
    uri = f"http://127.0.0.1:{closed_port()}"
    before = files(root)
    code, err, _, seconds = stilts(root, env | {"MLFLOW_TRACKING_URI": uri}, "transfer", "--source", "syn_nli",
                                   "--task", "syn_rte", module="stilts.mlproject")
    assert code == 2 and len(err.splitlines()) == 1 and f"MLflow tracking server {uri}" in err and seconds < 15
    assert files(root) == before  # its first steps (prepare, the intermediate cell) did not run


def test_study_names_its_tracking_uri_option(project):
    root, env = project
    uri = f"http://127.0.0.1:{closed_port()}"
    code, err, _, _ = stilts(root, env, "study", "--tracking-uri", uri)
    assert code == 2 and f"MLflow tracking server {uri} (--tracking-uri) does not answer" in err
    assert not (root / "dvc.yaml").exists()


def test_a_server_that_never_answers_stops_after_the_timeout(project):
    """It accepts connections (its backlog) but never answers: STILTS_TRACKING_TIMEOUT bounds the wait."""
    root, env = project
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code, err, _, seconds = stilts(root, env | {"MLFLOW_TRACKING_URI": uri, "STILTS_TRACKING_TIMEOUT": "2",
                                                    "STILTS_WORKER": "0"}, "intermediate", "--task", "syn_nli")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"stilts: error: MLflow tracking server {uri} (MLFLOW_TRACKING_URI) did not answer "
                          "within 2 s;") and err.endswith("(STILTS_TRACKING_TIMEOUT sets the wait)")
    assert seconds < 60  # importing MLflow (~7 s on a busy 2-core machine), then 2 s for the server
    assert not (root / "data").exists() and not (root / "mlflow.db").exists()


def test_a_web_server_that_is_not_mlflow_is_named(project):
    root, env = project
    port = closed_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=root / "..",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        code, err, _, _ = stilts(root, env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                                              "STILTS_WORKER": "0"}, "analyze")
    finally:
        web.terminate()
        web.wait(10)
    assert code == 2 and len(err.splitlines()) == 1
    assert "answered HTTP 501 to /api/2.0/mlflow/experiments/search: not an MLflow tracking server" in err


def test_a_server_that_refuses_the_credentials():
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{web.server_address[1]}"
        with pytest.raises(StiltsError) as e:
            service.check_store(uri)
        web.shutdown()
    assert str(e.value) == (f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) refused the credentials (HTTP 401); "
                            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")


def test_a_tracking_store_that_cannot_be_written(project):
    root, env = project
    (root / "afile").write_text("")
    code, err, _, seconds = stilts(root, env | {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/afile/mlflow.db"},
                                   "transfer", "--source", "none", "--task", "syn_rte")
    assert seconds < 15  # before a cell server would start
    assert code == 2 and err == (f"stilts: error: tracking store sqlite:///{root}/afile/mlflow.db "
                                 f"(MLFLOW_TRACKING_URI): cannot create {root}/afile: {root}/afile is a file, "
                                 "not a folder")


def test_the_tracking_timeout_setting_is_checked(monkeypatch):
    monkeypatch.setenv("STILTS_TRACKING_TIMEOUT", "soon")
    with pytest.raises(StiltsError, match=r"^STILTS_TRACKING_TIMEOUT='soon': must be a number of seconds > 0$"):
        service.check_store("http://127.0.0.1:1")
    monkeypatch.setenv("STILTS_TRACKING_TIMEOUT", "0")
    with pytest.raises(StiltsError, match="must be a number of seconds > 0"):
        service.timeout_s()
    monkeypatch.delenv("STILTS_TRACKING_TIMEOUT")
    assert service.timeout_s() == service.DEFAULT_TIMEOUT_S == 10


# ------------------------------------------------------------------------------------------ stilts server


def test_server_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execvpe", lambda *a: pytest.fail("the server must not start"))
    (tmp_path / "afile").write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cases = {
            ("--port", "99999"): "server: --port 99999 is not a TCP port (1-65535)",
            ("--port", str(port)): f"server: cannot listen on 127.0.0.1:{port}: address already in use; another "
                                   "process listens there; choose another --port",
            ("--port", str(closed_port()), "--backend-store-uri", f"sqlite:///{tmp_path}/afile/mlflow.db"):
                f"tracking store sqlite:///{tmp_path}/afile/mlflow.db (--backend-store-uri): cannot create "
                f"{tmp_path}/afile: {tmp_path}/afile is a file, not a folder",
            ("--port", str(closed_port()), "--artifacts-destination", f"{tmp_path}/afile/artifacts"):
                f"--artifacts-destination: cannot create {tmp_path}/afile/artifacts: {tmp_path}/afile is a file, "
                "not a folder",
            ("--port", str(closed_port()), "--workers", "0"): "server: --workers 0: must be ≥ 1",
        }
        for argv, message in cases.items():
            assert cli.main(["server", *argv]) == 2, argv
            assert capsys.readouterr().err == f"stilts: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no store, no artifacts folder


def test_server_workers_follow_the_cores(tmp_path, monkeypatch, capsys):
    for cores, workers in ((1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (128, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert service.server_workers() == workers
    started = []
    monkeypatch.setattr(os, "execvpe", lambda exe, cmd, env: started.append(cmd))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    port = str(closed_port())
    assert cli.main(["server", "--port", port]) == 0
    assert cli.main(["server", "--port", port, "--workers", "3"]) == 0
    assert started[0][started[0].index("--workers") + 1] == "1" and started[1][started[1].index("--workers") + 1] == "3"
    assert "(artifacts in" in capsys.readouterr().out and (tmp_path / "mlflow.db").is_file()


def test_the_server_names_the_study_training_runs_page(tmp_path, monkeypatch, capsys):
    """`make ui` (`stilts server --open`) opens the experiment's runs in the UI's model-training view: a fresh
    browser would otherwise land on the GenAI overview, whatever the experiment's kind."""
    import mlflow

    monkeypatch.setattr(os, "execvpe", lambda exe, cmd, env: None)
    opened = []
    monkeypatch.setattr(service, "open_when_up", lambda host, port, page: opened.append(page))
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    assert cli.main(["server", "--port", str(port)]) == 0  # no study yet: the experiments list
    assert f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning" in capsys.readouterr().out
    exp = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("stilts")
    assert cli.main(["server", "--port", str(port), "--open"]) == 0
    page = f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert f"training runs of 'stilts': {page}" in capsys.readouterr().out and opened == [page]


@pytest.mark.slow
def test_a_running_server_passes_the_check_and_keeps_its_port(tmp_path):
    """A real `stilts server` (default workers): the check's API call is one MLflow answers, and a second
    server on the same port is refused in one line."""
    port = closed_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.monotonic()
    server = subprocess.Popen([str(BIN / "stilts"), "server", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                service.check_store(uri)
                break
            except StiltsError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.5)
        print(f"server answered after {time.monotonic() - start:.1f} s")
        second = run(tmp_path, BIN / "stilts", "server", "--port", port, check=False, env=env, timeout=60)
        assert second.returncode == 2 and second.stderr == (
            f"stilts: error: server: cannot listen on 127.0.0.1:{port}: address already in use; another process "
            "listens there; choose another --port\n")
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    started = next(line for line in out.splitlines() if line.startswith("MLflow tracking server for"))
    assert started.endswith(f"{service.server_workers()} worker)" if service.server_workers() == 1 else "workers)")


# ------------------------------------------------------------------------------------------ params and MLflow UI


@pytest.mark.parametrize("over, message", [
    ({"tasks": {"target": ["syn_rte", "syn_copa", "syn_rte"]}},
     "'tasks.target[2]': 'syn_rte' is listed twice (also tasks.target[0])"),
    ({"tasks": {"intermediate": ["syn_nli", "syn_nli"]}},
     "'tasks.intermediate[1]': 'syn_nli' is listed twice (also tasks.intermediate[0])"),
    ({"tasks": {"probe": ["syn_tense", "syn_tense"]}}, "'tasks.probe[1]': 'syn_tense' is listed twice"),
    ({"rank": {"targets": ["syn_rte", "syn_rte"]}}, "'rank.targets[1]': 'syn_rte' is listed twice"),
    ({"rank": {"methods": ["semb", "semb"]}}, "'rank.methods[1]': 'semb' is listed twice"),
    ({"mlm": {"tasks": ["syn_nli", "syn_nli"]}}, "'mlm.tasks[1]': 'syn_nli' is listed twice"),
    ({"study": {"size_sweep_tasks": ["syn_nli", "syn_nli"]}}, "'study.size_sweep_tasks[1]': 'syn_nli' is listed"),
    ({"study": {"size_sweep_tasks": ["syn_nli"], "size_sweep_sizes": [16, 16]}},
     "'study.size_sweep_sizes[1]': '16' is listed twice"),
])
def test_duplicate_names_in_params(make_params, over, message):
    with pytest.raises(StiltsError, match=r"params.yaml: " + re.escape(message)):
        make_params(**over)


def test_duplicate_target_through_the_cli(project):
    root, env = project
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["tasks"]["target"] = ["syn_rte", "syn_copa", "syn_rte"]
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    before = files(root)
    code, err, _, _ = stilts(root, env | {"STILTS_WORKER": "0"}, "pipeline")
    assert code == 2 and err == ("stilts: error: params.yaml: 'tasks.target[2]': 'syn_rte' is listed twice "
                                 "(also tasks.target[0])")
    assert files(root) == before
    code, err, _, _ = stilts(root, env | {"STILTS_WORKER": "0"}, "rank", "--targets", "syn_rte,syn_rte")
    assert code == 2 and "is listed twice" in err


def test_experiments_open_in_the_model_training_view(make_params, tmp_path, monkeypatch):
    """`mlflow ui` picks its view from mlflow.experimentKind: the study's experiment and those import-results
    creates are tagged as model training; an experiment given another kind keeps it."""
    from mlflow.tracking import MlflowClient

    from stilts.analysis.imports import import_results

    params = make_params()
    tracking.start_run(params, "one", {"role": "target"}).finish()
    (tmp_path / "published.csv").write_text("restart,source,task,role,score\n0,none,rte,target,0.6\n")
    import_results(params, tmp_path / "published.csv", "published")
    client = MlflowClient(tracking.tracking_uri(params))
    client.create_experiment("older")  # made before stilts tagged experiments
    client.create_experiment("chosen", tags={KIND[0]: "genai_development"})
    for name in ("older", "chosen"):
        tracking.start_run(params, "one", {"role": "target"}, experiment=name).finish()
    kinds = {name: client.get_experiment_by_name(name).tags.get(KIND[0])
             for name in (params.mlflow.experiment, "published", "older", "chosen")}
    assert kinds == {params.mlflow.experiment: KIND[1], "published": KIND[1], "older": KIND[1],
                     "chosen": "genai_development"}
