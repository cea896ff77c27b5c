"""Kubernetes manifests for the experiment ``taskology launch`` would run on one machine.

    taskology launch --target kubernetes --gin_file table3_consistency --image REGISTRY/taskology:TAG \\
                     --storage gs://BUCKET/run1 --out k8s/            # then: kubectl apply -f k8s/

The processes are those of the local launcher's ``LaunchPlan`` (``plan_launch``), one Kubernetes object
per process instead of one child process:

* per served task (one some task reads): a ``Deployment`` of the official ``tensorflow/serving`` image,
  ``tensorflow_model_server --model_name T --model_base_path <storage>/T/export``, and a ``Service``
  ``<name>-<T>-serving`` in front of it (gRPC port 8500);
* per launched task: a trainer ``Job`` running this project's image (the ``Dockerfile``):
  ``taskology train --task T --workdir <storage> --peer P=<name>-<P>-serving:8500 ...``. Exit code 2
  (a usage error) fails the Job at once, other failures are retried ``--max_restarts`` times (the
  trainer resumes from its last checkpoint), as the local launcher does;
* a task with ``kubernetes_resources.workers > 1`` gets an Indexed Job of that many pods and a headless
  ``Service`` ``<name>-<T>-workers`` giving pod ``i`` the address ``<job>-<i>.<service>``; each pod
  derives ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}``)
  from ``JOB_COMPLETION_INDEX`` for ``TaskTrainer.strategy = 'multi_worker'``. Worker 0 (the chief)
  writes to ``<storage>``; worker ``i > 0`` writes its checkpoints to ``<storage>/workers/<i>`` (a
  multi-worker save is collective: every worker writes, only the chief's copy is the run's);
* one ``ConfigMap`` ``<name>-config`` holding the parsed gin configuration (every include resolved,
  every ``--gin_param`` applied) as one file, mounted at ``/etc/taskology/experiment.gin``.

Resources per task come from gin, scoped per task like every other setting::

    kubernetes_resources.memory = '8Gi'
    depth/kubernetes_resources.gpu = 1
    depth/kubernetes_resources.workers = 2
    depth/TaskTrainer.strategy = 'multi_worker'

Storage: ``--storage`` is a TensorFlow filesystem URL both the trainers and ``tensorflow_model_server``
read (``gs://...``), or an absolute path on a ``ReadWriteMany`` PersistentVolumeClaim given with
``--storage_claim`` (mounted at that path in every pod). No manifest uses a host path or a loopback
address. Everything here is pure: functions return dicts, ``write_manifests`` writes them as YAML.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Sequence

import gin

CONFIG_DIR = "/etc/taskology"
CONFIG_FILE = "experiment.gin"
SERVING_PORT = 8500  # tensorflow_model_server's gRPC port
WORKER_PORT = 2222  # MultiWorkerMirroredStrategy's collective port in a multi-worker Job
DEFAULT_SERVING_IMAGE = "tensorflow/serving:latest"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[?::1\]?|0\.0\.0\.0)$", re.I)

# The Indexed Job's entry: TF_CONFIG and the work folder from the pod's index, then the trainer ("$@").
WORKER_SCRIPT = (
    'set -e\n'
    'i="${JOB_COMPLETION_INDEX:?not set: run as an Indexed Job}"\n'
    'export TF_CONFIG="{\\"cluster\\": {\\"worker\\": $TASKOLOGY_WORKERS}, '
    '\\"task\\": {\\"type\\": \\"worker\\", \\"index\\": $i}}"\n'
    'workdir="$TASKOLOGY_STORAGE"\n'
    'if [ "$i" != 0 ]; then workdir="$TASKOLOGY_STORAGE/workers/$i"; fi\n'
    'exec "$@" --workdir "$workdir"\n'
)


class KubernetesError(ValueError):
    """Flags or gin settings that cannot become manifests (printed without a traceback, exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one task's pods request. cpu: Kubernetes CPU quantity ("2", "500m"); memory: bytes quantity
    ("8Gi"); gpu: ``nvidia.com/gpu`` per trainer pod; workers: trainer pods (>1: an Indexed Job)."""

    cpu: str = "2"
    memory: str = "8Gi"
    gpu: int = 0
    workers: int = 1
    server_cpu: str = "1"
    server_memory: str = "2Gi"


@gin.configurable
def kubernetes_resources(cpu="2", memory="8Gi", gpu=0, workers=1, server_cpu="1", server_memory="2Gi") -> Resources:
    """Resource requests of a task's pods on Kubernetes; bind per task (``depth/kubernetes_resources.gpu = 1``).

    cpu, server_cpu: CPU quantities of a trainer pod and of the task's ``tensorflow_model_server`` pod.
    memory, server_memory: memory quantities ("8Gi", "512Mi"). gpu: GPUs per trainer pod (0 = none).
    workers: trainer pods of the task (> 1 needs ``TaskTrainer.strategy = 'multi_worker'``).
    """
    for name, value in (("gpu", gpu), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "workers" else 0):
            raise KubernetesError(f"kubernetes_resources.{name} must be a whole number "
                                  f"{'>= 1' if name == 'workers' else '>= 0'}, got {value!r}.")
    for name, value in (("cpu", cpu), ("memory", memory), ("server_cpu", server_cpu), ("server_memory", server_memory)):
        if not re.fullmatch(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?", str(value)):
            raise KubernetesError(f"kubernetes_resources.{name} = {value!r} is not a Kubernetes quantity "
                                  "(e.g. '2', '500m', '8Gi').")
    return Resources(str(cpu), str(memory), int(gpu), int(workers), str(server_cpu), str(server_memory))


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where the experiment runs. image: this project's image; storage: the shared work folder (URL or
    absolute path); storage_claim: PersistentVolumeClaim mounted at ``storage`` (None for a URL);
    name: prefix of every object's name; poll_seconds: servers' ``--file_system_poll_wait_seconds``."""

    image: str
    storage: str
    name: str = "taskology"
    storage_claim: str | None = None
    namespace: str | None = None
    serving_image: str = DEFAULT_SERVING_IMAGE
    poll_seconds: int = 10
    max_restarts: int = 3


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the manifests need from gin beyond the plan: the config text and each task's resources/strategy."""

    config_text: str
    resources: dict[str, Resources]
    strategies: dict[str, str]


# -- reading gin ------------------------------------------------------------------------------------


def _scoped(scope: str, name: str, default):
    """The value gin binds to ``scope/name``, else to ``name``, else ``default`` (references as references)."""
    for key in (f"{scope}/{name}", name):
        try:
            return gin.query_parameter(key)
        except ValueError:
            continue
    return default


def _strategy_name(task: str) -> str:
    value = _scoped(task, "TaskTrainer.strategy", None)
    if isinstance(value, gin.config.ConfigurableReference):  # @make_strategy() with make_strategy.name = ...
        value = _scoped(task, "make_strategy.name", "default")
    return "default" if value is None else str(value).strip().lower().replace("-", "_")


def read_settings(gin_files: Sequence[str], gin_params: Sequence[str] = (), imports: Sequence[str] = (),
                  tasks: Sequence[str] = ()) -> Settings:
    """Parse the gin config once more (cheap) for the ConfigMap text and the tasks' resources and strategies.

    Leaves gin's config cleared. ``tasks``: the plan's launched tasks.
    """
    from taskology_tf.cli import UsageError, parse_gin

    try:
        parse_gin(list(gin_files), list(gin_params), list(imports))
        text = gin.config_str()
        resources, strategies = {}, {}
        for task in tasks:
            with gin.config_scope(task):
                resources[task] = kubernetes_resources()
            strategies[task] = _strategy_name(task)
    except UsageError as e:
        raise KubernetesError(str(e)) from e
    finally:
        gin.clear_config()
    for task in tasks:
        if resources[task].workers > 1 and strategies[task] != "multi_worker":
            raise KubernetesError(
                f"task {task!r} has kubernetes_resources.workers = {resources[task].workers} but its strategy is "
                f"{strategies[task]!r}; several trainer pods train one network only with "
                f"{task}/TaskTrainer.strategy = 'multi_worker' (or set {task}/kubernetes_resources.workers = 1).")
        if strategies[task] == "multi_worker" and resources[task].workers == 1:
            raise KubernetesError(
                f"task {task!r} uses TaskTrainer.strategy = 'multi_worker' with one worker; set "
                f"{task}/kubernetes_resources.workers to the number of trainer pods (>= 2), or use 'mirrored'.")
    return Settings(text, resources, strategies)


# -- checks and names -------------------------------------------------------------------------------


def is_url(path: str) -> bool:
    """True for a TensorFlow filesystem URL (``gs://b/x``), False for a plain path."""
    return "://" in path


def check_cluster(cluster: Cluster) -> None:
    """Raise ``KubernetesError`` for flags that cannot work on a cluster."""
    if not cluster.image:
        raise KubernetesError("--target kubernetes needs --image REGISTRY/REPO:TAG, the trainer image built from the "
                              "Dockerfile and pushed where the cluster pulls from (docker build -t IMAGE . && "
                              "docker push IMAGE).")
    if not cluster.storage:
        raise KubernetesError("--target kubernetes needs --storage: a URL every pod reads and writes (gs://BUCKET/run) "
                              "or an absolute path with --storage_claim NAME (a ReadWriteMany PersistentVolumeClaim).")
    if is_url(cluster.storage):
        if cluster.storage.startswith("file://"):
            raise KubernetesError(f"--storage {cluster.storage}: a file:// URL is a path on one node; give the path "
                                  "with --storage_claim NAME (a ReadWriteMany PersistentVolumeClaim) instead.")
        if cluster.storage_claim:
            raise KubernetesError(f"--storage {cluster.storage} is a URL: --storage_claim only applies to a path.")
    else:
        if not cluster.storage.startswith("/"):
            raise KubernetesError(f"--storage {cluster.storage!r}: give an absolute path inside the pods "
                                  "(with --storage_claim) or a URL such as gs://BUCKET/run.")
        if not cluster.storage_claim:
            raise KubernetesError(f"--storage {cluster.storage} is a path: every pod must see the same folder, so name a "
                                  "ReadWriteMany PersistentVolumeClaim with --storage_claim NAME (it is mounted at "
                                  "that path); host paths are not used. Or give a URL such as gs://BUCKET/run.")
    for what, value in (("--name", cluster.name), ("--storage_claim", cluster.storage_claim),
                        ("--namespace", cluster.namespace)):
        if value is not None and not _DNS_LABEL.match(value):
            raise KubernetesError(f"{what} {value!r} must be a DNS label: lower-case letters, digits and '-', "
                                  "starting with a letter.")
    if cluster.poll_seconds < 1:
        raise KubernetesError(f"--poll_seconds must be >= 1, got {cluster.poll_seconds}.")
    if cluster.max_restarts < 0:
        raise KubernetesError(f"--max_restarts must be >= 0, got {cluster.max_restarts}.")


def object_name(cluster: Cluster, task: str, role: str) -> str:
    """``<name>-<task>-<role>`` as a DNS label (``_`` becomes ``-``); raises when longer than 63 characters."""
    name = f"{cluster.name}-{task}-{role}".lower().replace("_", "-")
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise KubernetesError(f"object name {name!r} (from --name {cluster.name!r} and task {task!r}) is not a DNS "
                              "label of at most 63 characters; choose a shorter --name.")
    return name


def host(cluster: Cluster, service: str) -> str:
    """The DNS name of a Service: short (same namespace) or fully qualified with --namespace."""
    return f"{service}.{cluster.namespace}.svc.cluster.local" if cluster.namespace else service


def peer_address(cluster: Cluster, plan, peer: str) -> str:
    """``host:port`` a trainer reads ``peer`` at: its Service here, or the ``--peer`` address given."""
    if peer in plan.remote:
        return plan.remote[peer]
    return f"{host(cluster, object_name(cluster, peer, 'serving'))}:{SERVING_PORT}"


def export_path(storage: str, task: str) -> str:
    """Where the trainer of ``task`` publishes its versions (``<storage>/<task>/export``)."""
    return f"{storage.rstrip('/')}/{task}/export"


# -- objects ----------------------------------------------------------------------------------------


def _metadata(cluster: Cluster, name: str, task: str | None, role: str) -> dict:
    labels = {"app.kubernetes.io/name": "taskology", "app.kubernetes.io/instance": cluster.name,
              "app.kubernetes.io/component": role}
    if task is not None:
        labels["taskology/task"] = task.replace("_", "-")
    meta = {"name": name, "labels": labels}
    if cluster.namespace:
        meta["namespace"] = cluster.namespace
    return meta


def _storage_volume(cluster: Cluster) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) giving a pod the shared storage: the claim at ``storage``, or nothing for a URL."""
    if not cluster.storage_claim:
        return [], []
    return ([{"name": "storage", "persistentVolumeClaim": {"claimName": cluster.storage_claim}}],
            [{"name": "storage", "mountPath": cluster.storage}])


def config_map(cluster: Cluster, config_text: str) -> dict:
    """The ConfigMap holding the experiment's gin config as ``experiment.gin``."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(cluster, f"{cluster.name}-config", None, "config"),
            "data": {CONFIG_FILE: config_text}}


def server_objects(cluster: Cluster, task: str, resources: Resources) -> list[dict]:
    """Deployment + Service of ``tensorflow_model_server`` serving ``<storage>/<task>/export`` as model ``task``."""
    name = object_name(cluster, task, "serving")
    meta = _metadata(cluster, name, task, "serving")
    volumes, mounts = _storage_volume(cluster)
    container = {
        "name": "serving",
        "image": cluster.serving_image,
        "command": ["tensorflow_model_server"],
        "args": [f"--port={SERVING_PORT}", f"--model_name={task}",
                 f"--model_base_path={export_path(cluster.storage, task)}",
                 f"--file_system_poll_wait_seconds={cluster.poll_seconds}"],
        "ports": [{"name": "grpc", "containerPort": SERVING_PORT}],
        "readinessProbe": {"tcpSocket": {"port": SERVING_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": resources.server_cpu, "memory": resources.server_memory}},
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    selector = {"app.kubernetes.io/instance": cluster.name, "app.kubernetes.io/component": "serving",
                "taskology/task": meta["labels"]["taskology/task"]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                  "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                           "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"selector": selector,
                        "ports": [{"name": "grpc", "port": SERVING_PORT, "targetPort": SERVING_PORT}]}}
    return [deployment, service]


def trainer_args(cluster: Cluster, plan, task: str, imports: Sequence[str] = ()) -> list[str]:
    """The trainer's command line (without ``--workdir`` for a multi-worker task: its entry script adds it)."""
    args = ["taskology", "train", "--task", task, "--no_progress", "--gin_file", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    for module in imports:
        args += ["--import", module]
    for peer in plan.peers[task]:
        args += ["--peer", f"{peer}={peer_address(cluster, plan, peer)}"]
    return args


def worker_addresses(cluster: Cluster, task: str, workers: int) -> list[str]:
    """``host:port`` of each pod of a multi-worker task's Indexed Job, by index."""
    job, service = object_name(cluster, task, "trainer"), object_name(cluster, task, "workers")
    return [f"{job}-{i}.{host(cluster, service)}:{WORKER_PORT}" for i in range(workers)]


def trainer_objects(cluster: Cluster, plan, task: str, resources: Resources, imports: Sequence[str] = ()) -> list[dict]:
    """The trainer Job of ``task`` (an Indexed Job + headless Service when it has several workers)."""
    name = object_name(cluster, task, "trainer")
    meta = _metadata(cluster, name, task, "trainer")
    volumes, mounts = _storage_volume(cluster)
    mounts = [*mounts, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    volumes = [*volumes, {"name": "config", "configMap": {"name": f"{cluster.name}-config"}}]
    requests = {"cpu": resources.cpu, "memory": resources.memory}
    limits = {}
    if resources.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(resources.gpu)
    container = {"name": "trainer", "image": cluster.image, "resources": {"requests": requests},
                 "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}], "volumeMounts": mounts}
    if limits:
        container["resources"]["limits"] = limits
    args = trainer_args(cluster, plan, task, imports)
    pod = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
    spec = {
        "backoffLimit": cluster.max_restarts,
        # Exit code 2 is a usage error: retrying would fail the same way (the local launcher does not either).
        "podFailurePolicy": {"rules": [{"action": "FailJob",
                                        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}}]},
        "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
    }
    objects = []
    if resources.workers == 1:
        container["args"] = [*args, "--workdir", cluster.storage]
    else:
        service = object_name(cluster, task, "workers")
        container["command"] = ["sh", "-c", WORKER_SCRIPT, "taskology-worker"]
        container["args"] = args
        container["env"] += [
            {"name": "TASKOLOGY_WORKERS", "value": json.dumps(worker_addresses(cluster, task, resources.workers))},
            {"name": "TASKOLOGY_STORAGE", "value": cluster.storage},
        ]
        container["ports"] = [{"name": "collective", "containerPort": WORKER_PORT}]
        pod["subdomain"] = service
        spec.update(completionMode="Indexed", completions=resources.workers, parallelism=resources.workers)
        selector = {"app.kubernetes.io/instance": cluster.name, "app.kubernetes.io/component": "trainer",
                    "taskology/task": meta["labels"]["taskology/task"]}
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": _metadata(cluster, service, task, "workers"),
                        "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True,
                                 "ports": [{"name": "collective", "port": WORKER_PORT, "targetPort": WORKER_PORT}]}})
    objects.insert(0, {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec})
    return objects


def manifests(plan, cluster: Cluster, settings: Settings, imports: Sequence[str] = ()) -> dict[str, list[dict]]:
    """File name -> the objects in it: ``config.yaml``, ``<task>-serving.yaml`` per served task and
    ``<task>-trainer.yaml`` per launched task of ``plan`` (a ``LaunchPlan``)."""
    check_cluster(cluster)
    for peer, address in plan.remote.items():
        hostname = address.rpartition(":")[0]
        if _LOOPBACK.match(hostname):
            raise KubernetesError(f"--peer {peer}={address} is a loopback address: inside a pod it is the pod itself. "
                                  "Give an address the cluster reaches (a Service DNS name or an external host).")
    files = {"config.yaml": [config_map(cluster, settings.config_text)]}
    for task in plan.served:
        files[f"{task}-serving.yaml"] = server_objects(cluster, task, settings.resources[task])
    for task in plan.tasks:
        files[f"{task}-trainer.yaml"] = trainer_objects(cluster, plan, task, settings.resources[task], imports)
    return files


def write_manifests(files: dict[str, list[dict]], out_dir: str) -> list[str]:
    """Write each file's objects as YAML documents under ``out_dir`` (created); returns the paths written.

    Files of an earlier run in ``out_dir`` that this run does not write are left alone: use a fresh folder
    (``kubectl apply -f DIR`` applies every file in it)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, objects in files.items():
        path = os.path.join(out_dir, name)
        with open(path, "w") as f:
            f.write(to_yaml(objects))
        paths.append(path)
    return paths


def to_yaml(objects: Sequence[dict]) -> str:
    """Objects as YAML documents; multi-line strings (the gin config, the worker script) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)
