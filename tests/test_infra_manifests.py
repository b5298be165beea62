"""The production topology in infra/ against the schemas of the tools that will read it.

Offline and fast: Kubernetes manifests against Kubernetes' own OpenAPI schemas (strict:
unknown fields fail), the Prefect work pool's base job template against Prefect's server-side
model, docker-compose.yml against the compose-spec JSON schema (vendored next to it), the
Dockerfile, and the SLURM batch script run with stand-in `srun`/`scontrol`. Besides the schemas,
what users rely on: no secret has a default, every long-running service reports its health,
state lives in named volumes, the training launch matches what `biomedclip.train` supports.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE_DIR = INFRA / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S_DIR = INFRA / "k8s"
WORK_POOL = K8S_DIR / "prefect-work-pool.json"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
SBATCH = INFRA / "slurm" / "train.sbatch"

# The oldest Kubernetes the manifests support (Indexed Jobs, podFailurePolicy: GA in 1.31), and
# the newest whose schemas kubernetes-validate bundles.
K8S_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|AUTH")
IMAGE_UID = 10001  # the trainer image's non-root user (infra/docker/Dockerfile)


# --- helpers ------------------------------------------------------------------------------------

def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, desired_version=version, strict=True)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as `docker compose --env-file` reads them (no quoting used here)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        env[key.strip()] = value.strip()
    return env


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str], used: set[str] | None = None) -> Any:
    """Compose's interpolation, for the forms the spec defines: $$ (a literal $), $VAR, ${VAR},
    ${VAR:-default} / ${VAR-default}, ${VAR:?error} / ${VAR?error}, ${VAR:+alt} / ${VAR+alt}.
    Values are interpolated, keys are not. `used` collects every variable name met."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, used) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, used) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        if used is not None:
            used.add(name)
        op, arg = match.group("op"), match.group("arg") or ""
        is_set = name in env
        non_empty = bool(env.get(name))
        present = non_empty if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_rendered(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(compose_raw(), read_env_file(ENV_EXAMPLE) if env is None else env)


def environment_items(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return environment


def is_long_running(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) not in ("no", "false")


# --- docker compose -----------------------------------------------------------------------------

def compose_schema() -> dict[str, Any]:
    return json.loads((COMPOSE_DIR / "compose-spec.schema.json").read_text())


@pytest.mark.unit
def test_vendored_compose_spec_schema_is_a_valid_draft7_schema() -> None:
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.unit
def test_compose_file_validates_against_the_compose_spec() -> None:
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = sorted(validator.iter_errors(compose_rendered()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.unit
def test_compose_spec_validation_catches_a_misspelt_key() -> None:
    """The schema check is not vacuous: a typo in a service key fails it."""
    doc = compose_rendered()
    doc["services"]["mlflow"]["healthchek"] = doc["services"]["mlflow"].pop("healthcheck")
    assert list(jsonschema.Draft7Validator(compose_schema()).iter_errors(doc))


@pytest.mark.unit
def test_env_example_declares_exactly_the_variables_compose_uses() -> None:
    used: set[str] = set()
    interpolate(compose_raw(), read_env_file(ENV_EXAMPLE), used)
    declared = set(read_env_file(ENV_EXAMPLE))
    assert used - declared == set(), "used by docker-compose.yml, missing from .env.example"
    assert declared - used == set(), "declared in .env.example, unused by docker-compose.yml"


@pytest.mark.unit
def test_env_example_holds_placeholders_only_for_secrets() -> None:
    for name, value in read_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(name) or name.endswith(("_USER", "_USERNAME", "_ACCESS_KEY_ID")):
            assert "change-me" in value, f".env.example: {name} must be a change-me placeholder"


def required_variables() -> list[str]:
    names: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str):
            names.update(m.group("braced") for m in _VARIABLE.finditer(value)
                         if m.group("op") in (":?", "?"))

    collect(compose_raw())
    return sorted(names)


@pytest.mark.unit
def test_every_password_is_required_by_compose() -> None:
    required = set(required_variables())
    for name in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD",
                 "MINIO_ROOT_PASSWORD", "S3_SECRET_ACCESS_KEY", "MLFLOW_ADMIN_PASSWORD",
                 "MLFLOW_FLASK_SERVER_SECRET_KEY", "PREFECT_API_AUTH_STRING"):
        assert name in required


@pytest.mark.unit
@pytest.mark.parametrize("name", required_variables())
def test_compose_refuses_to_start_without_a_required_variable(name: str) -> None:
    for env in ({k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != name},
                {**read_env_file(ENV_EXAMPLE), name: ""}):
        with pytest.raises(MissingVariable, match=name):
            compose_rendered(env)


@pytest.mark.unit
def test_secret_environment_variables_come_from_required_variables_only() -> None:
    """No literal and no default for anything secret-looking, in any service."""
    required_form = re.compile(r"\$\{[A-Za-z_]\w*:\?[^}]+\}")
    raw = compose_raw()
    offenders = []
    for service_name, service in raw["services"].items():
        for name, value in environment_items(service).items():
            if SECRET_NAME.search(name) and not required_form.fullmatch(str(value)):
                offenders.append(f"{service_name}.{name}={value!r}")
    assert not offenders, f"secret-looking variables with a literal or default value: {offenders}"


@pytest.mark.unit
def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose_rendered()["services"]
    long_running = {name for name, service in services.items() if is_long_running(service)}
    assert {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker"} <= long_running
    for name in long_running:
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


@pytest.mark.unit
def test_one_shot_services_do_not_restart() -> None:
    services = compose_rendered()["services"]
    assert services["minio-init"]["restart"] == "no"


@pytest.mark.unit
def test_volumes_are_named_volumes_declared_at_top_level() -> None:
    doc = compose_rendered()
    declared = set(doc.get("volumes") or {})
    used = set()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                assert ":" in volume, f"{name}: anonymous volume {volume!r}"
            else:
                assert volume.get("type", "volume") == "volume", f"{name}: {volume['type']} mount"
                source = volume["source"]
            assert not source.startswith((".", "/", "~")), f"{name}: bind mount {volume!r}"
            assert source in declared, f"{name}: volume {source!r} not declared at top level"
            used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


@pytest.mark.unit
def test_service_dependencies_wait_for_health() -> None:
    services = compose_rendered()["services"]
    mlflow = services["mlflow"]["depends_on"]
    assert mlflow["postgres"]["condition"] == "service_healthy"
    assert mlflow["minio-init"]["condition"] == "service_completed_successfully"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for worker in ("prefect-worker", "prefect-worker-gpu"):
        depends = services[worker]["depends_on"]
        assert depends["prefect-server"]["condition"] == "service_healthy"
        assert depends["mlflow"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


@pytest.mark.unit
def test_services_run_what_the_topology_needs() -> None:
    services = compose_rendered()["services"]
    mlflow_env = environment_items(services["mlflow"])
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow-artifacts"
    assert "mlflow:5000" in mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert services["postgres"]["image"] == "postgres:15"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/minio/health/live" in " ".join(services["minio"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    assert environment_items(server)["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    worker = services["prefect-worker"]
    assert worker["command"][:7] == ["prefect", "worker", "start", "--pool", "biomedclip-process",
                                     "--type", "process"]
    assert "--with-healthcheck" in worker["command"]  # serves the /health its healthcheck reads
    assert "8080/health" in " ".join(worker["healthcheck"]["test"])
    worker_env = environment_items(worker)
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker_env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # The worker's credentials are the ones the services are configured with.
    assert worker_env["PREFECT_API_AUTH_STRING"] == environment_items(server)["PREFECT_SERVER_API_AUTH_STRING"]
    assert worker_env["MLFLOW_TRACKING_PASSWORD"] == mlflow_env["MLFLOW_ADMIN_PASSWORD"]
    assert worker_env["AWS_SECRET_ACCESS_KEY"] == mlflow_env["AWS_SECRET_ACCESS_KEY"]
    gpu = services["prefect-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.unit
def test_trainer_image_is_built_from_the_project_dockerfile() -> None:
    services = compose_rendered()["services"]
    for name in ("mlflow", "prefect-worker", "prefect-worker-gpu"):
        build = services[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.integration
def test_compose_configs_exist_and_scripts_parse() -> None:
    doc = compose_rendered()
    for name, config in doc["configs"].items():
        path = COMPOSE_DIR / config["file"]
        assert path.is_file(), f"config {name}: {path} missing"
        if path.suffix == ".sh":
            syntax_check("sh", path)
        elif path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")
    for name, service in doc["services"].items():
        for config in service.get("configs", []):
            source = config if isinstance(config, str) else config["source"]
            assert source in doc["configs"], f"{name}: unknown config {source}"


@pytest.mark.integration
def test_mlflow_entrypoint_renders_an_auth_config_mlflow_accepts(tmp_path: Path, monkeypatch) -> None:
    from mlflow.server.auth.config import read_auth_config

    db_password, admin_password = "p@ss:w/o%rd#1", "adm%n pass"
    ini = tmp_path / "auth" / "basic_auth.ini"
    env = {"PATH": os.environ["PATH"], "MLFLOW_DB_PASSWORD": db_password,
           "MLFLOW_ADMIN_USERNAME": "admin", "MLFLOW_ADMIN_PASSWORD": admin_password,
           "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    result = subprocess.run([sys.executable, str(COMPOSE_DIR / "mlflow_entrypoint.py"), "--render-only"],
                            env=env, capture_output=True, text=True, check=True)
    command = result.stdout.split()
    assert command[:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert command[command.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts"
    assert db_password not in result.stdout + result.stderr
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    config = read_auth_config()
    assert config.database_uri == f"postgresql://mlflow:{quote(db_password, safe='')}@postgres:5432/mlflow_auth"
    assert (config.admin_username, config.admin_password) == ("admin", admin_password)
    assert config.default_permission == "READ"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


@pytest.mark.integration
def test_mlflow_entrypoint_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "MLFLOW_ADMIN_USERNAME": "admin",
           "MLFLOW_ADMIN_PASSWORD": "x", "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "a.ini")}
    result = subprocess.run([sys.executable, str(COMPOSE_DIR / "mlflow_entrypoint.py"), "--render-only"],
                            env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "MLFLOW_DB_PASSWORD" in result.stderr


@pytest.mark.unit
def test_postgres_init_creates_the_roles_and_databases() -> None:
    script = (COMPOSE_DIR / "postgres-init.sh").read_text()
    for statement in ("CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password'",
                      "CREATE ROLE prefect LOGIN PASSWORD :'prefect_password'",
                      "CREATE DATABASE mlflow OWNER mlflow", "CREATE DATABASE mlflow_auth OWNER mlflow",
                      "CREATE DATABASE prefect OWNER prefect"):
        assert statement in script
    postgres_env = environment_items(compose_raw()["services"]["postgres"])
    for name in re.findall(r'\$\{([A-Z_]+):\?', script):
        assert name in postgres_env, f"postgres-init.sh reads {name}, the service does not set it"


# --- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for parts in (line.strip().split(None, 1) for line in logical)]


@pytest.mark.unit
def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args.strip() for instruction, args in dockerfile_instructions() if instruction == "USER"]
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == str(IMAGE_UID)
    assert f"--uid {IMAGE_UID}" in DOCKERFILE.read_text()


@pytest.mark.unit
def test_dockerfile_installs_exactly_the_lock_then_the_project() -> None:
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    lock = [i for i, run in enumerate(runs) if "pip install --no-cache-dir -r requirements.lock" in run]
    project = [i for i, run in enumerate(runs) if re.search(r"pip install --no-cache-dir --no-deps \.(\s|$)", run)]
    assert lock and project and lock[0] < project[0]
    instructions = dockerfile_instructions()
    assert instructions[0][0] in ("ARG", "FROM")
    base = next(args for instruction, args in instructions if instruction == "FROM")
    assert "python:3.11" in DOCKERFILE.read_text() or "nvidia/cuda" in base
    workdir = [args for instruction, args in instructions if instruction == "WORKDIR"]
    assert workdir == ["/app"]
    env = " ".join(args for instruction, args in instructions if instruction == "ENV")
    assert "PREFECT_HOME=/app/" in env


@pytest.mark.unit
def test_dockerfile_copies_no_secrets() -> None:
    for instruction, args in dockerfile_instructions():
        if instruction in ("COPY", "ADD"):
            assert ".env" not in args.split(), f"{instruction} {args}: copies a secrets file"
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".env", "**/.env", ".git", ".venv", "data", ".dvc/cache", "mlflow.db", ".prefect"} <= ignored
    for needed in ("requirements.lock", "pyproject.toml", "README.md", "src", "params.yaml", "flows"):
        assert needed not in ignored, f"{needed} is needed by the image but ignored"
    assert "docker build -f infra/docker/Dockerfile -t biomedclip-trainer ." in DOCKERFILE.read_text()


# --- Kubernetes ---------------------------------------------------------------------------------

def k8s_documents() -> list[tuple[str, int, dict[str, Any]]]:
    return [(path.name, index, doc) for path in sorted(K8S_DIR.glob("*.yaml"))
            for index, doc in enumerate(yaml_docs(path))]


@pytest.mark.unit
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("filename", "index", "doc"), k8s_documents(),
                         ids=[f"{name}[{index}]-{doc['kind']}" for name, index, doc in k8s_documents()])
def test_kubernetes_manifest_validates_strictly(filename: str, index: int, doc: dict[str, Any],
                                               version: str) -> None:
    k8s_validate(doc, version)


@pytest.mark.unit
def test_kubernetes_validation_catches_a_misspelt_field() -> None:
    job = next(doc for _, _, doc in k8s_documents() if doc["kind"] == "Job")
    broken = copy.deepcopy(job)
    broken["spec"]["completionsMode"] = broken["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken, K8S_VERSIONS[0])


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, _, doc in k8s_documents() if doc["kind"] == kind]
    return doc


@pytest.mark.unit
def test_train_job_is_a_coherent_multi_node_ddp_launch() -> None:
    service, job = by_kind("Service"), by_kind("Job")
    job_name, service_name = job["metadata"]["name"], service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job_name}
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert pod["subdomain"] == service_name
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    nodes = int(env["NNODES"])
    assert nodes >= 2 and spec["completions"] == spec["parallelism"] == nodes
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert int(env["NPROC_PER_NODE"]) == gpus
    script = " ".join(container["command"] + container["args"])
    rendezvous = re.search(r"--rdzv_endpoint=(\S+):(\d+)", script)
    assert rendezvous and rendezvous.group(1) == f"{job_name}-0.{service_name}"
    assert int(rendezvous.group(2)) in {port["port"] for port in service["spec"]["ports"]}
    for flag in ("--rdzv_backend=c10d", '--node_rank="${JOB_COMPLETION_INDEX}"',
                 '--nnodes="${NNODES}"', '--nproc_per_node="${NPROC_PER_NODE}"',
                 "-m biomedclip.train --params"):
        assert flag in script
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] >= 1
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    claim = volumes[mounts["/app/data"]]["persistentVolumeClaim"]["claimName"]
    assert claim == by_kind("PersistentVolumeClaim")["metadata"]["name"]
    sources = {next(iter(source)): next(iter(source.values()))["name"] for source in container["envFrom"]}
    assert sources == {"configMapRef": by_kind("ConfigMap")["metadata"]["name"],
                       "secretRef": by_kind("Secret")["metadata"]["name"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID


@pytest.mark.integration
def test_the_training_module_takes_the_flags_the_launchers_pass() -> None:
    result = subprocess.run([sys.executable, "-m", "biomedclip.train", "--help"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert "--params" in result.stdout


@pytest.mark.unit
def test_configmap_and_secret_carry_the_endpoints_and_credentials() -> None:
    endpoints = by_kind("ConfigMap")["data"]
    assert {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "PREFECT_API_URL"} <= set(endpoints)
    assert not any(SECRET_NAME.search(name) for name in endpoints), "a secret in the ConfigMap"
    secret = by_kind("Secret")
    assert secret["metadata"]["name"] == "biomedclip-credentials"
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    assert all("change-me" in value for value in secret["stringData"].values())
    assert "--from-env-file" in (K8S_DIR / "secret.example.yaml").read_text()


# --- Prefect Kubernetes work pool ---------------------------------------------------------------

def work_pool_template() -> dict[str, Any]:
    return json.loads(WORK_POOL.read_text())


def template_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """What a worker starts from: every variable's non-null default (as Prefect's
    BaseJobConfiguration._get_base_config_defaults)."""
    return {name: prop["default"] for name, prop in template["variables"]["properties"].items()
            if prop.get("default") is not None}


EXAMPLE_VALUES = {
    "image": "registry.example.com/biomedclip-trainer:0.1.0",
    "name": "biomedclip-train",
    "gpus": 8, "cpu": "64", "memory": "512Gi", "shm_size": "64Gi",
    "service_account_name": "biomedclip-runner",
    "env": {"BIOMEDCLIP_STAGE": "train"},
    "labels": {"team": "biomed-ml"},
    "command": "prefect flow-run execute",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
}


def render_job_manifest(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The Job a Kubernetes worker submits: the template with the values applied (Prefect's own
    templating), then the worker's own fix-ups (prefect_kubernetes KubernetesWorkerJobConfiguration:
    env dict -> list of name/value, args string -> argv)."""
    from prefect.utilities.templating import apply_values

    configuration = apply_values(template["job_configuration"], {**template_defaults(template), **values})
    manifest = configuration["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in (configuration.get("env") or {}).items()]
    if isinstance(container.get("args"), str):
        container["args"] = shlex.split(container["args"])
    return manifest


def strip_prefect_pod_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes worker insists on parallelism/completions = 1 inside the *pod* spec (its
    _get_base_job_manifest check), where Kubernetes has no such fields: the API server drops
    them as unknown fields. Remove exactly those two before strict validation."""
    manifest = copy.deepcopy(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert pod.pop("parallelism") == 1 and pod.pop("completions") == 1
    return manifest


@pytest.mark.unit
def test_work_pool_variables_are_a_valid_json_schema() -> None:
    variables = work_pool_template()["variables"]
    jsonschema.Draft7Validator.check_schema(variables)
    jsonschema.Draft202012Validator.check_schema(variables)
    for prop in variables["properties"].values():
        if "default" in prop:
            jsonschema.validate(prop["default"], {**prop, "definitions": variables.get("definitions", {})})
        for example in prop.get("examples", []):
            jsonschema.validate(example, prop)
    for name, value in EXAMPLE_VALUES.items():
        jsonschema.validate(value, variables["properties"][name])


@pytest.mark.unit
def test_work_pool_placeholders_are_all_declared() -> None:
    from prefect.utilities.templating import find_placeholders

    template = work_pool_template()
    placeholders = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    declared = set(template["variables"]["properties"])
    assert placeholders - declared == set()
    assert {"image", "namespace", "gpus", "cpu", "memory", "env", "service_account_name"} <= placeholders


@pytest.mark.integration
def test_prefect_server_accepts_the_base_job_template() -> None:
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name="k8s-gpu", type="kubernetes", base_job_template=work_pool_template())
    assert pool.base_job_template["variables"]["properties"]["gpus"]["default"] == 1


@pytest.mark.integration
def test_prefect_server_rejects_an_undeclared_placeholder() -> None:
    from prefect.server.schemas.actions import WorkPoolCreate

    template = work_pool_template()
    del template["variables"]["properties"]["gpus"]
    with pytest.raises(ValueError, match="gpus"):
        WorkPoolCreate(name="k8s-gpu", type="kubernetes", base_job_template=template)


@pytest.mark.unit
def test_work_pool_job_satisfies_the_kubernetes_workers_own_checks() -> None:
    manifest = render_job_manifest(work_pool_template(), {})
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert isinstance(manifest["metadata"]["labels"], dict)
    pod = manifest["spec"]["template"]["spec"]
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    assert pod["containers"][0]["name"] == "prefect-job"


@pytest.mark.unit
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", [{}, EXAMPLE_VALUES], ids=["defaults", "example-values"])
def test_work_pool_job_manifest_validates_strictly(values: dict[str, Any], version: str) -> None:
    manifest = render_job_manifest(work_pool_template(), values)
    assert not re.search(r"{{.*}}", json.dumps(manifest)), "a placeholder left unrendered"
    k8s_validate(strip_prefect_pod_fields(manifest), version)


@pytest.mark.unit
def test_work_pool_job_requests_the_gpus_variable() -> None:
    template = work_pool_template()
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    gpus = template["variables"]["properties"]["gpus"]
    assert gpus["type"] == "integer" and gpus["default"] == 1
    for count in (1, 8):
        rendered = render_job_manifest(template, {"gpus": count})
        resources = rendered["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == count
    refs = render_job_manifest(template, {})["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": by_kind("ConfigMap")["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": by_kind("Secret")["metadata"]["name"]}} in refs


# --- SLURM --------------------------------------------------------------------------------------

def sbatch_directives() -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in SBATCH.read_text().splitlines():
        if line.startswith("#SBATCH"):
            option = line[len("#SBATCH"):].strip()
            match = re.fullmatch(r"--([a-z-]+)(?:=(\S+))?", option)
            assert match, f"unparseable directive: {line!r}"
            directives[match.group(1)] = match.group(2) or ""
    return directives


def syntax_check(shell: str, path: Path) -> None:
    """`bash -n` reports some errors (e.g. in [[ ]]) on stderr yet exits 0: check both."""
    result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr


@pytest.mark.integration
def test_sbatch_script_parses() -> None:
    syntax_check("bash", SBATCH)


@pytest.mark.unit
def test_sbatch_directives_are_complete_and_consistent() -> None:
    directives = sbatch_directives()
    for option in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time", "output"):
        assert option in directives, f"#SBATCH --{option} missing"
    assert int(directives["nodes"]) >= 1
    assert directives["ntasks-per-node"] == directives["gpus-per-node"], "one task per GPU"
    assert re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", directives["time"])
    # sbatch stops reading directives at the first command: they must all come before it.
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines[1:], 1) if line.strip() and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))


@pytest.mark.unit
def test_sbatch_never_prints_credentials() -> None:
    text = SBATCH.read_text()
    assert not re.search(r"^\s*set\s+(-\w*x|-o\s+xtrace)", text, re.M), "xtrace would print secrets"
    for line in text.splitlines():
        if re.search(r"\b(echo|printf|env|printenv|export -p|declare -p)\b", line.split("#")[0]):
            assert not re.search(r"\$\{?\w*(PASSWORD|SECRET|KEY|TOKEN|AUTH)", line), line


@pytest.mark.integration
def test_sbatch_launches_one_training_process_per_task(tmp_path: Path) -> None:
    """Run the script with stand-ins for scontrol and srun: the env file reaches the tasks without
    being printed, MASTER_ADDR is the allocation's first node, srun starts biomedclip.train."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-017\\ngpu-018\\n"\n')
    (bin_dir / "srun").write_text(
        '#!/bin/sh\n{ echo "ARGS $*"; echo "MASTER_ADDR=$MASTER_ADDR"; echo "MASTER_PORT=$MASTER_PORT";'
        ' echo "MLFLOW_TRACKING_PASSWORD=$MLFLOW_TRACKING_PASSWORD"; } > "$SRUN_LOG"\n')
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    secret = "s3cr3t-value-Zq9"
    env_file = tmp_path / "slurm.env"
    env_file.write_text(f"MLFLOW_TRACKING_URI=https://mlflow.example.org\nMLFLOW_TRACKING_PASSWORD={secret}\n")
    env_file.chmod(0o600)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_NODELIST": "gpu-[017-018]",
           "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NTASKS": "16", "SLURM_CPUS_PER_TASK": "8",
           "BIOMEDCLIP_ENV_FILE": str(env_file), "BIOMEDCLIP_VENV": str(venv),
           "SRUN_LOG": str(tmp_path / "srun.log")}
    result = subprocess.run(["bash", str(SBATCH), "params.yaml"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    srun = dict(line.split("=", 1) for line in (tmp_path / "srun.log").read_text().splitlines()
                if "=" in line and not line.startswith("ARGS"))
    args = (tmp_path / "srun.log").read_text().splitlines()[0]
    assert args.endswith("python -m biomedclip.train --params params.yaml")
    assert srun["MASTER_ADDR"] == "gpu-017"
    assert 29500 <= int(srun["MASTER_PORT"]) < 30500
    assert srun["MLFLOW_TRACKING_PASSWORD"] == secret  # exported to the tasks


@pytest.mark.unit
def test_slurm_task_variables_become_the_process_group_ranks() -> None:
    """What each srun task does with the script's MASTER_ADDR and SLURM's ids."""
    from biomedclip.train.distributed import _from_slurm

    env = {"SLURM_PROCID": "11", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3",
           "MASTER_ADDR": "gpu-017", "MASTER_PORT": "29742", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.9"}
    _from_slurm(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("11", "16", "3")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("gpu-017", "29742")
