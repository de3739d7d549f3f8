"""The files under cluster/ parse, describe the cluster the sweep expects, and hold no secrets.

The Ray version is read from pyproject.toml so that bumping the pin without updating the
images (or the other way round) fails here rather than on a cluster.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SECRET_KEYS = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "RAY_AUTH_TOKEN")
GPU = "nvidia.com/gpu"


def ray_version() -> str:
    """X.Y.Z from the `ray[...]==X.Y.Z` pin in pyproject.toml."""
    m = re.search(
        r"""["']ray\[[^\]]*\]==(\d+\.\d+\.\d+)["']""", (ROOT / "pyproject.toml").read_text()
    )
    assert m, "pyproject.toml: no ray[...]==X.Y.Z dependency"
    return m.group(1)


def yaml_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def load(rel: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / rel).read_text()) if d is not None]


def one(rel: str, kind: str) -> dict:
    docs = [d for d in load(rel) if d.get("kind") == kind]
    assert len(docs) == 1, f"{rel}: expected one {kind}, found {len(docs)}"
    return docs[0]


def has_version(image: str, version: str) -> bool:
    """The image's tag contains the Ray version as a whole X.Y.Z (2.60.0-py311-gpu, not 2.60.01)."""
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return re.search(rf"(?<![\d.]){re.escape(version)}(?![\d.])", tag) is not None


# --- secrets ----------------------------------------------------------------------------------

_KEYS = "|".join(SECRET_KEYS)
# KEY: value / KEY=value / "KEY": "value" (YAML, shell, env files, JSON); \b keeps RAY_AUTH_TOKEN
# from matching RAY_AUTH_TOKEN_PATH.
_ASSIGN = re.compile(rf"""\b(?P<key>{_KEYS})\b["']?[ \t]*[:=][ \t]*(?P<value>[^\s,}}\]]*)""")


def _is_reference(value: str) -> bool:
    """Empty, or an expansion: $VAR, ${VAR}, "$VAR", $(command)."""
    return value.strip("\"'") == "" or value.lstrip("\"'").startswith("$")


def literal_secrets_in_text(text: str) -> list[str]:
    """`KEY: value` / `KEY=value` assignments of a secret to anything but a `$` expansion."""
    return [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0).strip()}"
        for m in _ASSIGN.finditer(text)
        if not _is_reference(m.group("value"))
    ]


def literal_secrets_in_yaml(node, where: str = "") -> list[str]:
    """Kubernetes env entries for a secret that carry `value:` instead of a secretKeyRef,
    and mapping keys named like a secret with a non-reference value; YAML held in strings
    (runtimeEnvYAML) is searched too."""
    found = []
    if isinstance(node, dict):
        if node.get("name") in SECRET_KEYS and ("value" in node or "valueFrom" in node):
            ref = (node.get("valueFrom") or {}).get("secretKeyRef")
            if "value" in node or not ref:
                found.append(f"{where}: env {node['name']} is not a secretKeyRef")
        for k, v in node.items():
            if k in SECRET_KEYS and not (isinstance(v, str) and _is_reference(v)):
                found.append(f"{where}.{k}: literal value")
            found += literal_secrets_in_yaml(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += literal_secrets_in_yaml(v, f"{where}[{i}]")
    elif isinstance(node, str) and "\n" in node:
        try:
            inner = yaml.safe_load(node)
        except yaml.YAMLError:
            inner = None
        if isinstance(inner, (dict, list)):
            found += literal_secrets_in_yaml(inner, f"{where}(yaml)")
    return found


@pytest.mark.parametrize(
    "text",
    [
        "WANDB_API_KEY: abc123",
        "env_vars:\n  OPENAI_API_KEY: 'sk-live'\n",
        "export WANDB_API_KEY=abc123",
        "--from-literal=HF_TOKEN=hf_abc",
        '{"WANDB_API_KEY": "abc"}',
        "RAY_AUTH_TOKEN=deadbeef ray job submit",
    ],
)
def test_secret_scanner_flags_literals(text):
    assert literal_secrets_in_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "WANDB_API_KEY: $WANDB_API_KEY",
        "WANDB_API_KEY: ${WANDB_API_KEY}",
        '--from-literal=WANDB_API_KEY="$WANDB_API_KEY"',
        "export RAY_AUTH_TOKEN=$(kubectl get secret x)",
        "export RAY_AUTH_TOKEN_PATH=~/.ray/token",
        "- name: WANDB_API_KEY\n  valueFrom:\n    secretKeyRef: {name: s, key: WANDB_API_KEY}\n",
        "`WANDB_API_KEY` lives in the environment",
    ],
)
def test_secret_scanner_allows_references(text):
    assert literal_secrets_in_text(text) == []


def test_secret_scanner_checks_yaml_structure():
    ref = "env:\n  - name: WANDB_API_KEY\n    valueFrom:\n      secretKeyRef: {name: s, key: k}\n"
    assert literal_secrets_in_yaml(yaml.safe_load(ref)) == []
    assert literal_secrets_in_yaml({"env_vars": {"WANDB_API_KEY": "${WANDB_API_KEY}"}}) == []
    # Kubernetes env with a literal value, or a ref that is not a secretKeyRef.
    literal = "env:\n  - name: OPENAI_API_KEY\n    value: sk-live\n"
    assert literal_secrets_in_yaml(yaml.safe_load(literal))
    config_map = (
        "env:\n  - name: HF_TOKEN\n    valueFrom:\n      configMapKeyRef: {name: c, key: k}\n"
    )
    assert literal_secrets_in_yaml(yaml.safe_load(config_map))
    # YAML inside a string (RayJob.spec.runtimeEnvYAML).
    job = {"spec": {"runtimeEnvYAML": "env_vars:\n  WANDB_API_KEY: abc\n"}}
    assert literal_secrets_in_yaml(job)


def test_no_file_under_cluster_holds_a_secret():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert files
    problems = []
    for path in files:
        text = path.read_text()
        problems += [f"{path.relative_to(ROOT)} {p}" for p in literal_secrets_in_text(text)]
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                problems += [f"{path.relative_to(ROOT)} {p}" for p in literal_secrets_in_yaml(doc)]
    assert not problems, "secrets must be references ($VAR, secretKeyRef):\n" + "\n".join(problems)


# --- every file -------------------------------------------------------------------------------


def test_every_yaml_file_parses():
    files = yaml_files()
    names = {p.relative_to(CLUSTER).as_posix() for p in files}
    assert {
        "kuberay/rayjob.yaml",
        "kuberay/raycluster.yaml",
        "aws.yaml",
        "runtime_env.yaml",
    } <= names
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_dockerfile_base_matches_ray_pin():
    froms = re.findall(r"^FROM\s+(\S+)", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert froms and all(has_version(f, ray_version()) for f in froms), froms
    assert re.search(r"^RUN .*pip install", (CLUSTER / "Dockerfile").read_text(), re.M)


# --- KubeRay ----------------------------------------------------------------------------------


def check_cluster_spec(spec: dict, where: str) -> None:
    version = ray_version()
    assert str(spec.get("rayVersion")) == version, f"{where}: rayVersion != {version}"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", f"{where}: head must have num-cpus '0'"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"

    groups = [("head", head["template"]["spec"])]
    groups += [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    for name, pod in groups:
        for c in pod["containers"]:
            assert has_version(c["image"], version), (
                f"{where}/{name}: {c['image']} is not Ray {version}"
            )

    gpu_groups = []
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{where}/{g['groupName']}"
        res = g["template"]["spec"]["containers"][0]["resources"]
        limits, requests = res.get("limits", {}), res.get("requests", {})
        if int(limits.get(GPU, 0)) > 0 or int(requests.get(GPU, 0)) > 0:
            assert int(limits.get(GPU, 0)) > 0 and int(requests.get(GPU, 0)) > 0, (
                f"{where}/{g['groupName']}: {GPU} must be in both limits and requests"
            )
            assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()
            gpu_groups.append(g)
    assert gpu_groups, f"{where}: no worker group requests {GPU}"

    # The shared volume: a PVC mounted at the same path in every container.
    for name, pod in groups:
        pvcs = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in pod["containers"]:
            mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in pvcs}
            assert "/mnt/shared" in mounts, f"{where}/{name}: no PVC mounted at /mnt/shared"


def test_rayjob():
    job = one("kuberay/rayjob.yaml", "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "ecomtrain.sweep"], spec["entrypoint"]
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config).is_file(), f"entrypoint config {config} does not exist"
    assert argv[argv.index("--output") + 1].startswith("/mnt/shared/"), "output must be shared"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int)

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    assert not set(runtime_env.get("env_vars", {})) & set(SECRET_KEYS)
    check_cluster_spec(spec["rayClusterSpec"], "rayjob")

    # Secrets reach the pods by reference only.
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in head["env"] if "valueFrom" in e}
    assert {"WANDB_API_KEY", "OPENAI_API_KEY"} <= refs.keys()


def test_raycluster_matches_rayjob_cluster():
    cluster = one("kuberay/raycluster.yaml", "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    check_cluster_spec(cluster["spec"], "raycluster")
    job_spec = one("kuberay/rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]
    # Same groups: the two files are kept in sync by hand.
    assert cluster["spec"]["headGroupSpec"] == job_spec["headGroupSpec"]
    assert cluster["spec"]["workerGroupSpecs"] == job_spec["workerGroupSpecs"]


def test_pvc_is_read_write_many():
    claim = one("kuberay/pvc.yaml", "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    job = one("kuberay/rayjob.yaml", "RayJob")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in head["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claim["metadata"]["name"] in claims


# --- AWS and runtime env ----------------------------------------------------------------------


def test_aws_cluster_launcher():
    (cfg,) = load("aws.yaml")
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    assert cfg["auth"]["ssh_user"]
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "no work may land on the head"
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = [v for v in workers.values() if v.get("resources", {}).get("GPU", 0) > 0]
    assert gpu, "no worker node type with GPU resources"
    for t in gpu:
        assert t["min_workers"] == 0 and 0 < t["max_workers"] <= cfg["max_workers"]
    image = cfg.get("docker", {}).get("image")
    assert image or any("pip install" in c for c in cfg.get("setup_commands", []))
    if image:
        assert has_version(image, ray_version()), image


def test_aws_cluster_launcher_schema():
    """The config passes the launcher's own validation (schema and defaults)."""
    pytest.importorskip("ray")
    from ray.autoscaler._private.util import prepare_config, validate_config

    (cfg,) = load("aws.yaml")
    validate_config(prepare_config(cfg))


def test_runtime_env():
    (env,) = load("runtime_env.yaml")
    assert env["working_dir"] == "."
    assert {".venv", "runs", "wandb", ".git"} <= set(env["excludes"])
    assert not set(env.get("env_vars", {})) & set(SECRET_KEYS)
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values()), (
        "env var values are strings"
    )
