"""`taskology launch --target kubernetes`: manifests valid against the Kubernetes schemas (offline) and wired right."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from taskology_tf.core import distribute
from taskology_tf.launch import kubernetes
from taskology_tf.launch.launcher import launch_main, plan_launch

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S_VERSION = "1.31"  # podFailurePolicy is GA from 1.31
LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "[::1]", "::1:")
MULTI_WORKER = ["depth/kubernetes_resources.workers = 3", "depth/TaskTrainer.strategy = 'multi_worker'",
                "depth/kubernetes_resources.gpu = 1"]
EXPERIMENTS = {  # name: (gin file, gin params, extra flags)
    "table3": ("table3_consistency", [], ["--storage", "gs://bucket/table3"]),
    "table3_multi_worker_claim": ("table3_consistency", MULTI_WORKER,
                                  ["--storage", "/mnt/taskology/run", "--storage_claim", "shared-rwx",
                                   "--namespace", "research"]),
    "table1_e": ("table1_e", ["segmentation/kubernetes_resources.memory = '16Gi'"], ["--storage", "gs://bucket/t1e"]),
}


def _generate(tmp_path, gin_file, params, extra):
    out = tmp_path / "k8s"
    argv = ["--target", "kubernetes", "--gin_file", gin_file, "--image", "registry.example.com/taskology:0.1",
            "--out", str(out), *extra]
    for p in params:
        argv += ["--gin_param", p]
    assert launch_main(argv) == 0
    files = {}
    for name in sorted(os.listdir(out)):
        with open(out / name) as f:
            files[name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return files


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def generated(request, tmp_path_factory):
    gin_file, params, extra = EXPERIMENTS[request.param]
    files = _generate(tmp_path_factory.mktemp(request.param), gin_file, params, extra)
    return request.param, files, [d for docs in files.values() for d in docs]


def _of(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(obj):
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    return container


def _flag(args, name):
    """The value of ``--name=v`` or ``--name v`` in an argument list (None when absent)."""
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def _matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_manifest_passes_the_kubernetes_schema_offline(generated):
    _, _, docs = generated
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_files_hold_the_plans_processes(generated):
    key, files, docs = generated
    gin_file = EXPERIMENTS[key][0]
    plan = plan_launch([gin_file], EXPERIMENTS[key][1])
    assert sorted(files) == sorted(["config.yaml", *(f"{t}-serving.yaml" for t in plan.served),
                                    *(f"{t}-trainer.yaml" for t in plan.tasks)])
    assert len(_of(docs, "Job")) == len(plan.tasks) and len(_of(docs, "Deployment")) == len(plan.served)
    for job in _of(docs, "Job").values():
        args = _container(job)["args"]
        task = _flag(args, "task")
        assert args[:2] == ["taskology", "train"] and task in plan.tasks
        peers = [args[i + 1].split("=")[0] for i, a in enumerate(args) if a == "--peer"]
        assert sorted(peers) == plan.peers[task]


def test_every_peer_a_trainer_reads_has_a_service_serving_that_task(generated):
    _, _, docs = generated
    services, deployments = _of(docs, "Service"), _of(docs, "Deployment")
    for job in _of(docs, "Job").values():
        args = _container(job)["args"]
        peers = [args[i + 1] for i, a in enumerate(args) if a == "--peer"]
        assert peers, "every trainer here reads a peer"
        for item in peers:
            peer, address = item.split("=", 1)
            hostname, port = address.rsplit(":", 1)
            service = services[hostname.split(".")[0]]
            namespace = service["metadata"].get("namespace")
            if namespace:
                assert hostname == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
            else:
                assert hostname == service["metadata"]["name"]
            assert int(port) in [p["port"] for p in service["spec"]["ports"]]
            served = [d for d in deployments.values()
                      if _matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
            assert len(served) == 1, f"service {hostname} selects {len(served)} deployments"
            assert _flag(_container(served[0])["args"], "model_name") == peer


def _chief_workdir(job):
    container = _container(job)
    workdir = _flag(container["args"], "workdir")
    if workdir is None:  # a multi-worker Job: its entry script gives worker 0 the storage itself
        workdir = {e["name"]: e["value"] for e in container["env"]}["TASKOLOGY_STORAGE"]
    return workdir


def _mounts(obj):
    """mountPath -> claim name of the pod's PersistentVolumeClaim mounts."""
    spec = obj["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
              if "persistentVolumeClaim" in v}
    return {m["mountPath"]: claims[m["name"]] for m in _container(obj).get("volumeMounts", []) if m["name"] in claims}


def test_every_server_reads_where_its_task_trainer_exports(generated):
    _, _, docs = generated
    trainers = {_flag(_container(j)["args"], "task"): j for j in _of(docs, "Job").values()}
    for deployment in _of(docs, "Deployment").values():
        args = _container(deployment)["args"]
        task = _flag(args, "model_name")
        job = trainers[task]
        # The trainer writes <workdir>/<task>/export (TaskTrainer.export); the server polls exactly that.
        assert _flag(args, "model_base_path") == f"{_chief_workdir(job)}/{task}/export"
        assert _mounts(deployment) == _mounts(job)  # the same claim at the same path, or none for a URL
        for path in _mounts(job):
            assert _chief_workdir(job).startswith(path)


def _run_worker_entry(job, index):
    """Run a multi-worker pod's entry script with JOB_COMPLETION_INDEX=index; returns (TF_CONFIG, argv) it execs."""
    container = _container(job)
    env = {e["name"]: e["value"] for e in container["env"]}
    probe = [sys.executable, "-c", "import json, os, sys; print(json.dumps([os.environ['TF_CONFIG'], sys.argv[1:]]))"]
    command = [*container["command"], *probe, *container["args"][1:]]
    out = subprocess.run(command, env={"PATH": os.environ["PATH"], **env, "JOB_COMPLETION_INDEX": str(index)},
                         capture_output=True, text=True, check=True).stdout
    tf_config, argv = json.loads(out)
    return json.loads(tf_config), argv


def test_multi_worker_jobs_derive_tf_config_from_the_pod_index(generated, monkeypatch):
    key, _, docs = generated
    jobs = [j for j in _of(docs, "Job").values() if j["spec"].get("completionMode") == "Indexed"]
    if key != "table3_multi_worker_claim":
        assert jobs == []  # one worker per task: plain Jobs
        return
    (job,) = jobs
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    workers = spec["completions"]
    assert workers == spec["parallelism"] == 3
    headless = _of(docs, "Service")[pod["subdomain"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert _matches(headless["spec"]["selector"], spec["template"]["metadata"]["labels"])
    storage = _chief_workdir(job)
    for index in range(workers):
        config, argv = _run_worker_entry(job, index)
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribute.tf_config()["task"] == {"type": "worker", "index": index}
        addresses = config["cluster"]["worker"]
        assert len(addresses) == workers
        # Indexed Job pods are named <job>-<index> and reachable as <job>-<index>.<subdomain>[.<ns>.svc...].
        assert addresses[index].split(".")[:2] == [f"{job['metadata']['name']}-{index}", pod["subdomain"]]
        assert argv[-2:] == ["--workdir", storage if index == 0 else f"{storage}/workers/{index}"]
        assert _flag(argv, "task") == "depth"
    requests = _container(job)["resources"]
    assert requests["requests"]["nvidia.com/gpu"] == requests["limits"]["nvidia.com/gpu"] == "1"


def test_no_host_path_or_loopback_address_anywhere(generated):
    _, files, docs = generated
    text = kubernetes.to_yaml(docs)
    assert "hostPath" not in text
    for address in LOOPBACK:
        assert address not in text, address


def test_the_config_map_is_the_experiments_gin_config(generated, tmp_path):
    import gin

    from taskology_tf.cli import parse_gin

    key, _, docs = generated
    gin_file, params, _ = EXPERIMENTS[key]
    (config,) = _of(docs, "ConfigMap").values()
    path = tmp_path / kubernetes.CONFIG_FILE
    path.write_text(config["data"][kubernetes.CONFIG_FILE])
    try:
        parse_gin([gin_file], params)
        expected = gin.config_str()
        gin.clear_config()
        parse_gin([str(path)], [])  # what the trainer pods parse
        assert gin.config_str() == expected
    finally:
        gin.clear_config()
    for job in _of(docs, "Job").values():
        assert _flag(_container(job)["args"], "gin_file") == f"{kubernetes.CONFIG_DIR}/{kubernetes.CONFIG_FILE}"
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": config["metadata"]["name"]}} in volumes


def test_resources_come_from_gin_per_task(tmp_path):
    files = _generate(tmp_path, "table1_e", ["kubernetes_resources.cpu = '4'",
                                             "motion/kubernetes_resources.gpu = 2",
                                             "motion/kubernetes_resources.server_memory = '1Gi'"],
                      ["--storage", "gs://b/x"])
    motion = _container(files["motion-trainer.yaml"][0])["resources"]
    depth = _container(files["depth-trainer.yaml"][0])["resources"]
    assert motion == {"requests": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"},
                      "limits": {"nvidia.com/gpu": "2"}}
    assert depth == {"requests": {"cpu": "4", "memory": "8Gi"}}
    server = _container(files["motion-serving.yaml"][0])["resources"]["requests"]
    assert server == {"cpu": "1", "memory": "1Gi"}


def test_a_remote_peer_keeps_its_address_and_gets_no_objects(tmp_path):
    files = _generate(tmp_path, "table3_consistency", [],
                      ["--storage", "gs://b/x", "--peer", "normals=normals.other-team.svc.cluster.local:8500"])
    assert sorted(files) == ["config.yaml", "depth-serving.yaml", "depth-trainer.yaml"]
    args = _container(files["depth-trainer.yaml"][0])["args"]
    assert "normals=normals.other-team.svc.cluster.local:8500" in args


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--storage", "gs://b/x"], "needs --image"),
        (["--image", "i:1", "--storage", "/data/run"], "--storage_claim"),
        (["--image", "i:1", "--storage", "data/run", "--storage_claim", "c"], "absolute path"),
        (["--image", "i:1", "--storage", "file:///data/run"], "file:// URL"),
        (["--image", "i:1"], "needs --storage"),
        (["--image", "i:1", "--storage", "gs://b/x", "--workdir", "/tmp/x"], "--workdir is for --target local"),
        (["--image", "i:1", "--storage", "gs://b/x", "--peer", "normals=127.0.0.1:8500"], "loopback"),
        (["--image", "i:1", "--storage", "gs://b/x", "--gin_param", "depth/kubernetes_resources.workers = 2"],
         "'multi_worker'"),
        (["--image", "i:1", "--storage", "gs://b/x", "--gin_param", "depth/TaskTrainer.strategy = 'multi_worker'"],
         "kubernetes_resources.workers"),
        (["--image", "i:1", "--storage", "gs://b/x", "--gin_param", "kubernetes_resources.memory = 'lots'"],
         "not a Kubernetes quantity"),
        (["--image", "i:1", "--storage", "gs://b/x", "--name", "My_Run"], "DNS label"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "k8s"
    argv = ["--target", "kubernetes", "--gin_file", "table3_consistency", *extra]
    if "--workdir" not in extra:
        argv += ["--out", str(out)]
    assert launch_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskology launch: error:") and message in err, err
    assert not out.exists()


def test_kubernetes_flags_are_refused_for_the_local_target(tmp_path, capsys):
    argv = ["--gin_file", "table3_consistency", "--workdir", str(tmp_path / "run"), "--image", "i:1"]
    assert launch_main(argv) == 2
    assert "--image only apply with --target kubernetes" in capsys.readouterr().err


def test_the_dockerfile_installs_the_package_with_a_gpu_switch():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "Dockerfile")) as f:
        text = f.read()
    assert "ARG GPU" in text and "[gpu]" in text  # tensorflow[and-cuda] through the package's gpu extra
    assert "pip install" in text and "COPY gin" in text
    with open(os.path.join(root, ".dockerignore")) as f:
        assert ".venv" in f.read()
