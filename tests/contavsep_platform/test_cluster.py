"""cluster/: the image, the Ray cluster launcher configs, the KubeRay manifests and their README.

No cloud, no Kubernetes and no Docker engine here, so every file is checked by the real code that
reads it where that code ships with the project's environment: Ray's cluster-config validation
(what `ray up` runs before it contacts a cloud), the Ray autoscaler's own reading of a RayCluster
(what the KubeRay autoscaler sidecar runs), MLflow's server command line and host matcher,
contavsep's settings resolver, command line and search-space validation, and Ray's and
contavsep's command lines for every command of cluster/README.md. One slow test submits the
README's `ray job submit` to a real local Ray head.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from contavsep_platform.cli import build_parser, main
from contavsep_platform.settings import resolve_endpoints
from contavsep_platform.spaces import SearchSpace, load_space, shipped_spaces_dir

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHER_CONFIGS = ("aws-gpu.yaml", "gcp-gpu.yaml")
DRIVER_RESOURCE = "contavsep_driver"  # the head's resource for Tune trial drivers
TUNNEL = "http://127.0.0.1:8265"  # the dashboard through `ray dashboard` / `kubectl port-forward`
# An AWS access key id, or a 40-character secret: neither may appear in a committed file.
CREDENTIAL_PATTERN = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# Variables that would point the cluster at someone's services if a config carried them.
SETTINGS_VARIABLES = (
    "CONTAVSEP_STORAGE",
    "CONTAVSEP_S3_",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
)


# ----------------------------------------------------------------------------------------------
# reading the files


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every document of a (multi-document) YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest(path: Path, kind: str) -> dict[str, Any]:
    """The one document of ``kind`` in a Kubernetes manifest file."""
    found = [doc for doc in load_docs(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def launcher_config(name: str) -> dict[str, Any]:
    """A launcher config as `ray up` prepares it (defaults filled in), validated by Ray."""
    prepared = prepare_config(copy.deepcopy(yaml.safe_load((CLUSTER / name).read_text())))
    validate_config(prepared)
    return prepared


def kuberay_config() -> dict[str, Any]:
    """The RayCluster as the Ray autoscaler of a KubeRay cluster reads it (node types with the
    resources Ray derives from container limits and rayStartParams), validated by Ray."""
    return _derive_autoscaling_config_from_ray_cr(manifest(KUBERAY / "raycluster.yaml", "RayCluster"))


CLUSTER_CONFIGS = {
    "aws-gpu.yaml": lambda: launcher_config("aws-gpu.yaml"),
    "gcp-gpu.yaml": lambda: launcher_config("gcp-gpu.yaml"),
    "kuberay/raycluster.yaml": kuberay_config,
}


def worker_types(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def head_type(config: Mapping[str, Any]) -> dict[str, Any]:
    return config["available_node_types"][config["head_node_type"]]


def max_resources(config: Mapping[str, Any]) -> dict[str, float]:
    """The cluster at full size: head plus every worker type at its max_workers (the sum Ray
    computes for an autoscaling cluster's maximum resources)."""
    total: dict[str, float] = dict(head_type(config)["resources"])
    for t in worker_types(config).values():
        for name, amount in t["resources"].items():
            total[name] = total.get(name, 0) + t["max_workers"] * amount
    return total


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of cluster/Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in (CLUSTER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        current = ""
    return instructions


def dockerfile_project_dir() -> str:
    """The folder the image installs the project into (the WORKDIR of its `-e .` install)."""
    workdir = ""
    for keyword, args in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = args
        if keyword == "RUN" and "--no-deps -e ." in args:
            return workdir
    raise AssertionError("cluster/Dockerfile has no `--no-deps -e .` install")


def dockerfile_venv() -> str:
    """The image's virtual environment (its VIRTUAL_ENV)."""
    env = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    return re.search(r"VIRTUAL_ENV=(\S+)", env).group(1)


def makefile_install_recipe() -> list[str]:
    """The recipe lines of the Makefile's install stamp (what `make install` runs)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def values_of(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a parsed YAML document."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == key:
                yield v
            yield from values_of(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from values_of(item, key)


def image_references() -> dict[str, set[str]]:
    """Every container image named by the cluster files, by file."""
    refs: dict[str, set[str]] = {}
    for path in [*(CLUSTER / n for n in LAUNCHER_CONFIGS), *sorted(KUBERAY.glob("*.yaml"))]:
        images = {v for doc in load_docs(path) for v in values_of(doc, "image") if isinstance(v, str)}
        if images:
            refs[str(path.relative_to(CLUSTER))] = images
    return refs


def the_image() -> str:
    refs = image_references()
    images = set().union(*refs.values())
    assert len(images) == 1, f"the cluster files name different images: {refs}"
    return images.pop()


def settings_example() -> tuple[dict[str, str], dict[str, str]]:
    """(ConfigMap data, Secret stringData) of cluster/kuberay/settings.example.yaml."""
    path = KUBERAY / "settings.example.yaml"
    return manifest(path, "ConfigMap")["data"], manifest(path, "Secret")["stringData"]


def shipped_spaces() -> dict[str, SearchSpace]:
    return {
        p.stem: load_space(p, storage_uri="s3://my-bucket/contavsep")
        for p in sorted(shipped_spaces_dir().glob("*.yaml"))
    }


# ----------------------------------------------------------------------------------------------
# Ray cluster launcher configs


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_pass_rays_cluster_config_validation(name: str) -> None:
    config = launcher_config(name)
    assert config["provider"]["type"] == name.split("-")[0]

    # The validation has teeth: a misspelt node-type field and a fractional GPU count are refused.
    raw = yaml.safe_load((CLUSTER / name).read_text())
    typo = copy.deepcopy(raw)
    typo["available_node_types"]["gpu-1x"]["min_worker"] = typo["available_node_types"]["gpu-1x"].pop("min_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(typo))
    fractional = copy.deepcopy(raw)
    fractional["available_node_types"]["gpu-1x"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(fractional))


def _is_spot(provider: str, node_config: Mapping[str, Any]) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    return scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_have_the_issues_layout(name: str) -> None:
    config = launcher_config(name)
    provider = config["provider"]["type"]

    # An on-demand CPU head that carries the drivers and nothing heavy.
    head = head_type(config)
    assert head["resources"]["CPU"] == 0 and head["resources"].get("GPU", 0) == 0
    assert head["resources"][DRIVER_RESOURCE] >= 1
    assert not _is_spot(provider, head["node_config"])

    # GPU worker types that scale from 0: single-GPU, multi-GPU and a spot type; a CPU type.
    workers = worker_types(config)
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers.values())
    gpus = {n: t["resources"].get("GPU", 0) for n, t in workers.items()}
    spot = {n for n, t in workers.items() if _is_spot(provider, t["node_config"])}
    assert any(g == 1 and n not in spot for n, g in gpus.items())
    assert any(g >= 2 for g in gpus.values())
    assert any(gpus[n] >= 1 for n in spot)
    assert any(g == 0 for g in gpus.values())
    # Spot is preferred over the on-demand type of the same shape (autoscaler v2's priority).
    for n in spot:
        twins = [m for m, t in workers.items() if m not in spot and t["resources"] == workers[n]["resources"]]
        assert twins and all(workers[n].get("priority", 0) > workers[m].get("priority", 0) for m in twins)
    # Every type can reach its own maximum under the global cap.
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0

    # The image, started the launcher's way: the head runs the autoscaler, workers join it.
    assert config["docker"]["image"] == the_image()
    assert any(
        "ray start --head" in c and "--autoscaling-config=~/ray_bootstrap_config.yaml" in c
        for c in config["head_start_ray_commands"]
    )
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_carry_no_settings_or_credentials(name: str) -> None:
    text = (CLUSTER / name).read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # comments may name them
    # Where the nodes' own keys file is (a path on the node) points at nobody's services.
    code = code.replace("CONTAVSEP_S3_KEYS_FILE=", "")
    assert not [v for v in SETTINGS_VARIABLES if v in code]
    assert "s3://" not in code and not CREDENTIAL_PATTERN.search(text)


def test_gcp_head_setup_uses_the_images_paths_and_keeps_the_lock() -> None:
    # The Google API client (for the autoscaler) is installed into the image's environment, with
    # every locked package held at its pin.
    (command,) = launcher_config("gcp-gpu.yaml")["head_setup_commands"]
    argv = shlex.split(command)
    assert argv[:3] == ["uv", "pip", "install"]
    python = argv[argv.index("--python") + 1]
    constraints = argv[argv.index("--constraints") + 1]
    assert python == f"{dockerfile_venv()}/bin/python"
    assert constraints == f"{dockerfile_project_dir()}/requirements.lock"


# ----------------------------------------------------------------------------------------------
# KubeRay


def test_raycluster_as_the_ray_autoscaler_reads_it() -> None:
    cr = manifest(KUBERAY / "raycluster.yaml", "RayCluster")
    assert cr["apiVersion"] == "ray.io/v1"
    spec = cr["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert f"ray=={ray.__version__}" in (ROOT / "requirements.lock").read_text().splitlines()
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert options["version"] == "v2" and options["idleTimeoutSeconds"] > 0

    config = kuberay_config()
    head = head_type(config)
    assert head["resources"]["CPU"] == 0 and "GPU" not in head["resources"]
    assert head["resources"][DRIVER_RESOURCE] >= 1
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for name, t in worker_types(config).items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1 and "rayStartParams" in groups[name]
        resources = groups[name]["template"]["spec"]["containers"][0]["resources"]
        gpus = resources["limits"].get("nvidia.com/gpu", 0)
        assert t["resources"].get("GPU", 0) == gpus
        assert resources["requests"] == resources["limits"]  # the scheduler reserves what Ray offers
    assert sorted(t["resources"].get("GPU", 0) for t in worker_types(config).values()) == [0, 1, 1, 4]

    # Spot only where intended: the head and the on-demand groups exclude spot nodes, the spot
    # group requires them (GKE, EKS managed node groups, Karpenter).
    def terms(pod: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
        affinity = (
            pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
        )
        return [t["matchExpressions"] for t in affinity.get("nodeSelectorTerms", [])]

    spot_labels = {"cloud.google.com/gke-spot", "eks.amazonaws.com/capacityType", "karpenter.sh/capacity-type"}
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]} | {n: g["template"]["spec"] for n, g in groups.items()}
    for name, pod in pods.items():
        if "spot" in name:
            assert {e["key"] for term in terms(pod) for e in term if e["operator"] == "In"} == spot_labels
        else:
            (term,) = terms(pod)
            assert {e["key"] for e in term if e["operator"] == "NotIn"} == spot_labels
        container = pod["containers"][0]
        assert container["image"] == the_image()
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"] == {"medium": "Memory"}
        assert {"configMapRef": {"name": "contavsep-settings"}} in container["envFrom"]


def test_raycluster_and_launcher_configs_describe_the_same_cluster() -> None:
    configs = {name: make() for name, make in CLUSTER_CONFIGS.items()}
    shapes = {
        name: {n: t["resources"].get("GPU", 0) for n, t in worker_types(c).items()} for name, c in configs.items()
    }
    assert len({json.dumps(s, sort_keys=True) for s in shapes.values()}) == 1, shapes
    drivers = {name: head_type(c)["resources"][DRIVER_RESOURCE] for name, c in configs.items()}
    assert len(set(drivers.values())) == 1, drivers


def test_rayjob_runs_the_paper_sweep_on_the_raycluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from ray.runtime_env import RuntimeEnv

    job = manifest(KUBERAY / "rayjob-sweep.yaml", "RayJob")
    cluster = manifest(KUBERAY / "raycluster.yaml", "RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    runtime_env = RuntimeEnv(**yaml.safe_load(job["spec"]["runtimeEnvYAML"]))  # Ray's own checks
    # The job runs in the folder the image installs the project into.
    assert runtime_env.working_dir() == f"local://{dockerfile_project_dir()}"

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["contavsep", "sweep", "search_spaces/paper.yaml"] and "--name" in argv
    config_map, _ = settings_example()
    assert check_sweep(argv[1:], config_map, monkeypatch, tmp_path, capsys) == "paper"


def test_mlflow_manifest_sql_store_s3_artifacts_secret_keys_and_allowed_hosts() -> None:
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header
    from sqlalchemy.engine import make_url

    path = KUBERAY / "mlflow.yaml"
    assert {d["kind"] for d in load_docs(path)} == {"PersistentVolumeClaim", "Deployment", "Service"}
    deployment, service = manifest(path, "Deployment"), manifest(path, "Service")
    namespace = deployment["metadata"]["namespace"]
    assert (
        service["metadata"]["namespace"]
        == namespace
        == manifest(KUBERAY / "raycluster.yaml", "RayCluster")["metadata"]["namespace"]
    )
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"] == the_image()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}

    config_map, secret = settings_example()
    env = {e["name"]: e for e in container["env"]}

    # Kubernetes expands $(VAR) in args from the container's env: resolve them from the settings.
    def expand(arg: str) -> str:
        def value(m: re.Match) -> str:
            ref = env[m.group(1)]["valueFrom"]["configMapKeyRef"]
            return config_map[ref["key"]]

        return re.sub(r"\$\((\w+)\)", value, arg)

    params = server.make_context("server", [expand(a) for a in container["args"]]).params  # MLflow's own parser
    assert container["command"] == ["mlflow", "server"]
    assert make_url(params["backend_store_uri"]).get_backend_name() in {"sqlite", "postgresql", "mysql"}
    store = Path(make_url(params["backend_store_uri"]).database)
    assert any(store.is_relative_to(m["mountPath"]) for m in container["volumeMounts"])
    assert params["artifacts_destination"].startswith("s3://") and params["serve_artifacts"] is True
    assert int(params["workers"]) == 1  # SQLite: one writer

    # The S3 keys come from the Secret of the settings, under keys it defines.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == manifest(KUBERAY / "settings.example.yaml", "Secret")["metadata"]["name"]
        assert ref["key"] in secret
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref and not ref.get("optional"):
            assert ref["name"] == "contavsep-settings" and ref["key"] in config_map

    # The hosts MLflow accepts cover the service's in-cluster names and the port-forward, and
    # only those (MLflow's own matcher).
    allowed = params["allowed_hosts"].split(",")
    assert "*" not in allowed
    svc, ns, p = service["metadata"]["name"], namespace, port["port"]
    for host in (svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local", "localhost"):
        assert is_allowed_host_header(allowed, f"{host}:{p}") and is_allowed_host_header(allowed, host)
    assert not is_allowed_host_header(allowed, f"mlflow.attacker.example:{p}")
    assert is_allowed_host_header(allowed, urlparse(config_map["MLFLOW_TRACKING_URI"]).netloc)


def test_settings_resolve_to_the_clusters_storage_and_mlflow(tmp_path: Path) -> None:
    config_map, secret = settings_example()
    assert not CREDENTIAL_PATTERN.search((KUBERAY / "settings.example.yaml").read_text())
    # What a Ray pod sees (envFrom: the ConfigMap and the Secret), through contavsep's resolver.
    endpoints = resolve_endpoints({**config_map, **secret, "CONTAVSEP_HOME": str(tmp_path)})
    assert endpoints.storage_uri == config_map["CONTAVSEP_STORAGE"]
    assert endpoints.s3 is not None and endpoints.s3.access_key == secret["CONTAVSEP_S3_ACCESS_KEY"]
    assert endpoints.s3.region == config_map["CONTAVSEP_S3_REGION"]
    assert endpoints.mlflow_tracking_uri == config_map["MLFLOW_TRACKING_URI"]
    # Without the Secret (IAM roles): same storage, the cloud's default credentials.
    assert resolve_endpoints({**config_map, "CONTAVSEP_HOME": str(tmp_path)}).s3.access_key is None

    # Every key is read by someone: contavsep's settings code, botocore, or the MLflow manifest.
    readers = (ROOT / "platform/contavsep_platform/settings.py").read_text() + (
        ROOT / "contavsep/storage.py"
    ).read_text()
    mlflow_refs = (KUBERAY / "mlflow.yaml").read_text()
    for key in [*config_map, *secret]:
        assert key in readers or f"key: {key}" in mlflow_refs, key

    # Every reference in the Ray pods and MLflow names an object the settings define.
    refs = []
    for path in (KUBERAY / "raycluster.yaml", KUBERAY / "mlflow.yaml"):
        refs += re.findall(r"(configMapRef|secretRef|configMapKeyRef|secretKeyRef): \{name: ([\w-]+)", path.read_text())
    names = {
        "configMapRef": "contavsep-settings",
        "configMapKeyRef": "contavsep-settings",
        "secretRef": "contavsep-s3",
        "secretKeyRef": "contavsep-s3",
    }
    assert refs and all(name == names[kind] for kind, name in refs)
    assert manifest(KUBERAY / "settings.example.yaml", "ConfigMap")["metadata"]["name"] == "contavsep-settings"
    assert manifest(KUBERAY / "settings.example.yaml", "Secret")["metadata"]["name"] == "contavsep-s3"


# ----------------------------------------------------------------------------------------------
# the image


def test_dockerfile_installs_the_lock_like_the_makefile() -> None:
    instructions = dockerfile_instructions()
    recipe = makefile_install_recipe()
    (make_sync,) = [line for line in recipe if "pip sync" in line]
    (make_install,) = [line for line in recipe if "pip install" in line]
    lock = make_sync.split()[-1]
    assert lock == "requirements.lock" and make_install.endswith("--no-deps -e .")

    runs = [args for keyword, args in instructions if keyword == "RUN"]
    (sync,) = [r for r in runs if "uv pip sync" in r]
    assert sync.split()[-1] == lock  # the same lock file, synced exactly (extras removed)
    installs = [r for r in runs if "pip install" in r]
    assert installs and all("--no-deps -e ." in r for r in installs)  # nothing unpinned on top

    # The lock is copied from the repository root before the sync, the code before the install.
    copies = [
        (i, args.split())
        for i, (keyword, args) in enumerate(instructions)
        if keyword == "COPY" and "--from=" not in args
    ]
    position = {keyword + args: i for i, (keyword, args) in enumerate(instructions)}
    lock_copy = next(i for i, a in copies if lock in a[:-1])
    assert lock_copy < position["RUN" + sync] < position["RUN" + installs[0]]
    sources = {s for _, a in copies for s in a[:-1] if not s.startswith("--")}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert {"pyproject.toml", "README.md", "contavsep", "platform", "search_spaces"} <= sources
    assert 'where = [".", "platform"]' in pyproject and 'readme = "README.md"' in pyproject
    ignored = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored and source.split("/")[0] not in ignored, source

    # Python as the lock was resolved for; a pinned uv; a CUDA 13 base for torch's cu13 wheels.
    python = re.search(r"--python-version (\S+)", (ROOT / "Makefile").read_text()).group(1)
    assert f"uv python install {python}" in runs and f"uv venv --python {python}" in sync
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ AS uv", froms[0])
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-base-ubuntu24\.04", froms[-1])
    lock_text = (ROOT / lock).read_text()
    assert "torch==2.13.0" in lock_text and "nvidia-cudnn-cu13" in lock_text

    # Ray's conventions, contavsep on PATH, time for the sweep to save its state on `ray job
    # stop`, and no credentials baked in.
    assert ("USER", "ray") in instructions
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert f"PATH={dockerfile_venv()}/bin:$PATH" in env
    if "--compile-bytecode" in make_sync:  # as `make install`: imports on the nodes start compiled
        assert "--compile-bytecode" in sync or "UV_COMPILE_BYTECODE=1" in env
    assert int(re.search(r"RAY_JOB_STOP_WAIT_TIME_S=(\d+)", env).group(1)) >= 30
    names = [a.split("=", 1)[0] for keyword, args in instructions if keyword in ("ENV", "ARG") for a in args.split()]
    assert not [n for n in names if re.search(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", n)]
    assert not CREDENTIAL_PATTERN.search((CLUSTER / "Dockerfile").read_text())


def test_every_cluster_file_names_the_one_image_tagged_with_the_project_version() -> None:
    image = the_image()
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert image.rsplit(":", 1)[1] == version
    assert set(image_references()) == {"aws-gpu.yaml", "gcp-gpu.yaml", "kuberay/raycluster.yaml", "kuberay/mlflow.yaml"}


# ----------------------------------------------------------------------------------------------
# search spaces on these clusters


@pytest.mark.parametrize("cluster_name", sorted(CLUSTER_CONFIGS))
def test_search_spaces_fit_these_clusters(cluster_name: str) -> None:
    config = CLUSTER_CONFIGS[cluster_name]()
    workers = worker_types(config)
    head = head_type(config)
    capacity = max_resources(config)
    spaces = shipped_spaces()
    assert {"paper", "smoke"} <= set(spaces)
    for name, space in spaces.items():
        res = space.resources
        # Paper-size spaces (the paper budget or the reduced search budget) train on GPUs, tiny ones on CPUs.
        assert (res.gpus > 0) == (space.base["preset"] in ("paper", "search")), name

        # All Train workers of a trial fit one node of some type (Train packs them; DDP stays
        # inside a node), CPU-only trials fit a node without GPUs.
        def fits(resources: Mapping[str, float], res: Any = res) -> bool:
            return (
                resources.get("CPU", 0) + 1e-9 >= res.workers * res.cpus
                and resources.get("GPU", 0) + 1e-9 >= res.workers * res.gpus
            )

        hosts = [n for n, t in workers.items() if fits(t["resources"])]
        assert hosts, f"{name}: no {cluster_name} node type holds {res.workers} x ({res.cpus} CPU, {res.gpus} GPU)"
        if res.gpus == 0:
            assert any(workers[n]["resources"].get("GPU", 0) == 0 for n in hosts), name

        # Drivers go to the head's driver resource, never to its (absent) CPUs.
        assert head["resources"]["CPU"] == 0 and head["resources"][DRIVER_RESOURCE] >= res.driver_cpus

        # At full size the sweep runs at least one trial at once (the sweep's own computation).
        concurrent = res.concurrent_trials(capacity)
        assert concurrent >= 1, name


# ----------------------------------------------------------------------------------------------
# cluster/README.md: every command parses with the real command lines


def readme_commands() -> Iterator[list[str]]:
    """Each command of the README's bash blocks, split as the shell does (continuations joined,
    comments and variable assignments skipped)."""
    text = (CLUSTER / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line):
                yield shlex.split(line)


def parse_ray(argv: list[str]) -> click.Context:
    """The click context Ray's own CLI builds for ``ray <argv>`` (parsing only, nothing runs)."""
    with warnings.catch_warnings():  # Ray's CLI imports Ray Serve, whose models warn on import
        warnings.simplefilter("ignore")
        from ray.scripts.scripts import cli

    command: click.Command = cli
    name, args, parent = "ray", list(argv), None
    while True:
        ctx = command.make_context(name, args, parent=parent)
        if not isinstance(command, click.Group):
            return ctx
        rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + list(ctx.args)
        name, command, args = command.resolve_command(ctx, rest)
        parent = ctx


def parse_contavsep(argv: list[str]) -> Any:
    """contavsep's own argument parser on ``contavsep <argv>`` (exit 2 on a bad command)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`contavsep {shlex.join(argv)}` does not parse (exit {exc.code})") from None


def check_sweep(
    argv: list[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> str:
    """Run ``contavsep <argv> --check`` (the real space loading and validation) in the repository
    root with ``env`` as the only service settings; returns the validated space's name."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "RAY_ADDRESS",
        "CONTAVSEP_STORAGE",
        "CONTAVSEP_S3_ENDPOINT",
        "CONTAVSEP_S3_ACCESS_KEY",
        "CONTAVSEP_S3_SECRET_KEY",
        "CONTAVSEP_S3_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "contavsep-home"))
    monkeypatch.chdir(ROOT)
    assert parse_contavsep(list(argv)).command == "sweep"
    capsys.readouterr()
    assert main([*argv, "--check"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    return re.match(r"space (\S+):", out).group(1)


def test_readme_commands_parse_and_sweeps_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    cluster = manifest(KUBERAY / "raycluster.yaml", "RayCluster")
    namespace = cluster["metadata"]["namespace"]
    rayjob = manifest(KUBERAY / "rayjob-sweep.yaml", "RayJob")["metadata"]["name"]
    services = {
        f"{cluster['metadata']['name']}-head-svc",
        manifest(KUBERAY / "mlflow.yaml", "Service")["metadata"]["name"],
    }
    secret = manifest(KUBERAY / "settings.example.yaml", "Secret")
    image = the_image()
    exported: dict[str, str] = {}
    sweeps: list[list[str]] = []
    submissions: list[str] = []
    job_refs: list[str] = []
    seen: set[str] = set()

    for argv in readme_commands():
        head, args = argv[0], argv[1:]
        seen.add(head)
        if head == "export":
            key, value = args[0].split("=", 1)
            exported[key] = value
        elif head == "contavsep":
            if parse_contavsep(args).command == "sweep":
                sweeps.append(args)
        elif head == "ray":
            ctx = parse_ray(args)
            params = ctx.params
            if "cluster_config_file" in params:
                assert params["cluster_config_file"] in {f"cluster/{n}" for n in LAUNCHER_CONFIGS}
            if ctx.info_name == "exec" and params["cmd"].startswith("mlflow server"):
                from mlflow.cli import server

                server.make_context("server", shlex.split(params["cmd"])[2:])
            if ctx.info_name == "submit":
                assert params["address"] == TUNNEL
                submissions.append(params["submission_id"])
                entry = list(params["entrypoint"])
                assert entry[0] == "contavsep" and parse_contavsep(entry[1:]).command == "sweep"
                sweeps.append(entry[1:])
                runtime_env = params["runtime_env_json"]
                if runtime_env and runtime_env.startswith("$("):
                    # Settings from the user's environment: exactly the command that prints them.
                    assert parse_contavsep(shlex.split(runtime_env[2:-1])[1:]).runtime_env_json is True
                    assert params["working_dir"] == "."
                elif runtime_env:
                    from ray.runtime_env import RuntimeEnv

                    assert RuntimeEnv(**json.loads(runtime_env)).working_dir() == f"local://{dockerfile_project_dir()}"
                else:
                    assert params["working_dir"] == "."  # the space path is the checkout's
            if ctx.info_name in ("logs", "status", "stop"):
                assert params["address"] == TUNNEL
                job_refs.append(params["job_id"])
        elif head == "kubectl":
            if "-n" in args:
                assert args[args.index("-n") + 1] == namespace
            if "-f" in args and args[args.index("-f") + 1].startswith("cluster/"):
                assert (ROOT / args[args.index("-f") + 1]).is_file()
            rest = [a for i, a in enumerate(args) if a != "-n" and (i == 0 or args[i - 1] != "-n")]
            if rest[:2] == ["create", "namespace"]:
                assert rest[2] == namespace
            if rest[:3] == ["create", "secret", "generic"]:
                assert rest[3] == secret["metadata"]["name"]
                keys = {a.split("=", 2)[1] for a in rest if a.startswith("--from-literal=")}
                assert keys == set(secret["stringData"])
            if rest[0] == "port-forward":
                assert rest[1].split("/", 1)[1] in services
            if rest[0] in ("get", "delete") and rest[1] == "rayjob":
                assert rest[2] == rayjob
            if rest[0] == "get" and rest[1] == "raycluster":
                assert rest[2] == cluster["metadata"]["name"]
            if rest[0] == "logs":
                assert f"job-name={rayjob}" in rest
        elif head == "docker":
            if args[0] == "build":
                assert args[args.index("-f") + 1] == "cluster/Dockerfile" and args[-1] == "."
                assert args[args.index("-t") + 1] == image
            else:
                assert args == ["push", image]
        elif head == "sed":
            old = re.match(r"s#([^#]+)#", args[1]).group(1)
            assert old == image and {f"cluster/{f}" for f in image_references()} == set(args[2:])
        elif head == "cp":
            assert (ROOT / args[0]).is_file()
        else:
            assert head == "helm", f"unexpected command in cluster/README.md: {shlex.join(argv)}"

    # The README covers every step the issue asks for.
    assert {"ray", "kubectl", "docker", "contavsep"} <= seen
    ray_verbs = [shlex.join(a[1:3]) for a in readme_commands() if a[0] == "ray"]
    for verb in (
        "up cluster/aws-gpu.yaml",
        "dashboard cluster/aws-gpu.yaml",
        "job submit",
        "job logs",
        "job stop",
        "down cluster/aws-gpu.yaml",
    ):
        assert verb in ray_verbs, verb
    assert any("--resume" in s for s in sweeps)
    assert all(submissions)
    assert all(ref in submissions or ref.startswith("$") for ref in job_refs)
    # The settings the README exports are the ones of the KubeRay example.
    config_map, _ = settings_example()
    assert exported["CONTAVSEP_STORAGE"] == config_map["CONTAVSEP_STORAGE"]

    # Every sweep command passes contavsep's own space validation (`--check`), with a resume
    # using the same name as a sweep it continues.
    checked = {}
    for argv in {shlex.join(s): s for s in sweeps}.values():
        checked[shlex.join(argv)] = check_sweep(argv, exported, monkeypatch, tmp_path, capsys)
    assert {"paper", "smoke"} <= set(checked.values())
    names = {s[s.index("--name") + 1] for s in sweeps if "--resume" not in s}
    assert all(s[s.index("--name") + 1] in names for s in sweeps if "--resume" in s)


@pytest.mark.slow
def test_readme_job_submit_runs_on_a_real_ray_head(ray_head) -> None:
    # The README's smoke submission, verbatim except for the head's address and a fresh
    # submission id, with the settings of this session's services; --check keeps it short.
    argv = next(
        a
        for a in readme_commands()
        if a[:3] == ["ray", "job", "submit"] and "search_spaces/smoke.yaml" in a and any(x.startswith("$(") for x in a)
    )
    argv = list(argv)
    argv[argv.index("--address") + 1] = ray_head.ray_dashboard_url
    submission = f"smoke-{uuid.uuid4().hex[:8]}"
    argv[argv.index("--submission-id") + 1] = submission
    i = argv.index("--runtime-env-json") + 1
    inner = shlex.split(argv[i][2:-1])
    bin_dir = Path(sys.executable).parent
    printed = subprocess.run(
        [str(bin_dir / inner[0]), *inner[1:]], capture_output=True, text=True, timeout=120, check=True
    )
    argv[i] = printed.stdout.strip()
    assert json.loads(argv[i])["env_vars"]["CONTAVSEP_STORAGE"] == ray_head.storage_uri
    argv.append("--check")

    done = subprocess.run([str(bin_dir / "ray"), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "space smoke:" in done.stdout
    # The README's follow-up commands against the same job.
    status = subprocess.run(
        [str(bin_dir / "ray"), "job", "status", "--address", ray_head.ray_dashboard_url, submission],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "succeeded" in (status.stdout + status.stderr).lower()
    logs = subprocess.run(
        [str(bin_dir / "ray"), "job", "logs", "--address", ray_head.ray_dashboard_url, submission],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert logs.returncode == 0 and f"data.uri = '{ray_head.storage_uri}/datasets/synth-default'" in logs.stdout
