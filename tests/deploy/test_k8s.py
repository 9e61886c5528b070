"""deploy/k8s: each overlay rendered by `kubectl kustomize`, schema-checked, and wired right."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess

import click
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from imgclass.cli import main
from imgclass.cli_backup import backup_create
from imgclass.config import Settings
from imgclass.ops.cpus import plan
from imgclass.warehouse.backup_store import S3Store, open_store
from tests.conftest import REPO
from tests.deploy.conftest import dockerfile_stages, runtime_command, runtime_env
from tests.support.system import require_binary

K8S = REPO / "deploy" / "k8s"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
SECRET_NAME = "imgclass-secrets"
KUBERNETES_VERSION = "1.33.0"  # shipped by kubernetes-validate (dev extra)
OVERLAYS = ["dev", "prod"]
# Measured RSS (ps, `imgclass serve`, fp32 + int8 loaded, after requests): gunicorn's parent
# ~115 MB, each worker ~180 MB. A pod's memory limit must hold its workers with some room.
PARENT_MB, WORKER_MB = 128, 192


def quantity_cpus(value: str | int) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def quantity_mb(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", value).groups()
    return float(number) * units.get(unit, 1 / 2**20)


def render_text(overlay: str) -> str:
    kubectl = require_binary("kubectl", "kubectl")
    return subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, dict[tuple[str, str], dict]]:
    docs = render(request.param)
    return request.param, {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


def readme_secret_command() -> dict[str, str]:
    """The keys (and example values) of the README's `kubectl create secret` command."""
    readme = (REPO / "README.md").read_text()
    match = re.search(
        rf"kubectl -n \S+ create secret generic {SECRET_NAME} \\\n(?:.*\\\n)*.*\n", readme
    )
    assert match, "README: the Kubernetes section shows how to create the Secret"
    literals = re.findall(r"--from-literal=([A-Z0-9_]+)=('[^']*'|\"[^\"]*\"|\S+)", match.group(0))
    return {key: value.strip("'\"") for key, value in literals}


def example_secret() -> dict[str, str]:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", SECRET_NAME)
    return secret["stringData"]


def secret_refs(resources: dict) -> list[dict]:
    return [
        ref
        for container in all_containers(resources)
        for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    ]


def one(resources: dict, kind: str) -> dict:
    (found,) = [doc for (k, _), doc in resources.items() if k == kind]
    return found


def pod_spec(resources: dict) -> dict:
    return one(resources, "Deployment")["spec"]["template"]["spec"]


def server(resources: dict) -> dict:
    (container,) = pod_spec(resources)["containers"]
    return container


def all_containers(resources: dict) -> list[dict]:
    cron = one(resources, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    spec = pod_spec(resources)
    return spec["containers"] + spec.get("initContainers", []) + cron["containers"]


def test_every_manifest_matches_the_kubernetes_schema(rendered):
    _overlay, resources = rendered
    assert len(resources) >= 9
    for doc in resources.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_a_misspelt_field(rendered):
    _overlay, resources = rendered
    broken = copy.deepcopy(one(resources, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_probes_and_port_match_the_app(rendered, app):
    _overlay, resources = rendered
    container = server(resources)
    (port,) = container["ports"]
    assert port["containerPort"] == int(runtime_env()["IMGCLASS_PORT"])
    assert dockerfile_stages()["runtime"].values("EXPOSE") == [str(port["containerPort"])]
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
    service = resources[("Service", "imgclass")]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # The image's entrypoint is `imgclass`; the pod runs the same subcommand as the image.
    assert container["args"] == runtime_command()[1:]


def test_resources_follow_the_cpu_sizing(rendered):
    overlay, resources = rendered
    for container in all_containers(resources):
        res = container["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(
            res["limits"]
        ), container["name"]
        assert quantity_cpus(res["requests"]["cpu"]) <= quantity_cpus(res["limits"]["cpu"])
        assert quantity_mb(res["requests"]["memory"]) <= quantity_mb(res["limits"]["memory"])
    limits = server(resources)["resources"]["limits"]
    cpus = quantity_cpus(limits["cpu"])
    assert cpus == math.floor(cpus) >= 1, "a fractional CPU limit is rounded down: wasted"
    workers = plan(int(cpus)).workers  # what the server will run under this quota
    assert quantity_mb(limits["memory"]) >= PARENT_MB + WORKER_MB * workers
    if overlay == "prod":  # guaranteed CPU
        assert server(resources)["resources"]["requests"]["cpu"] == limits["cpu"]
    config = one(resources, "ConfigMap")["data"]
    assert "IMGCLASS_WORKERS" not in config and "IMGCLASS_INFERENCE_THREADS" not in config


def test_applying_an_overlay_never_touches_the_secret(overlay):
    """The Secret is created by hand (or a secret store): `apply -k` must not replace it."""
    text = render_text(overlay)
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    assert "REPLACE" not in text  # no placeholder anywhere in what is applied


def test_every_secret_key_read_is_one_the_readme_creates(rendered):
    _overlay, resources = rendered
    created = readme_secret_command()
    refs = secret_refs(resources)
    assert refs
    for ref in refs:
        assert ref["name"] == SECRET_NAME, ref
        assert ref["key"] in created, f"the README's create command lacks {ref['key']}"
    # The example file lists the same keys (it is what people copy into a secret store).
    assert set(example_secret()) == set(created) == {ref["key"] for ref in refs}
    server_env = {e["name"] for e in server(resources)["env"]}
    assert {"IMGCLASS_DATABASE_URL", "IMGCLASS_ADMIN_KEY"} <= server_env


def test_pods_read_the_generated_config(rendered):
    _overlay, resources = rendered
    configmap = one(resources, "ConfigMap")
    for container in all_containers(resources):
        (source,) = container["envFrom"]
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]


def test_the_placeholder_admin_key_cannot_be_deployed():
    with pytest.raises(ValidationError, match="admin key"):
        Settings(admin_key=example_secret()["IMGCLASS_ADMIN_KEY"])


def test_config_holds_real_settings_consistent_with_the_ingress(rendered):
    _overlay, resources = rendered
    config = one(resources, "ConfigMap")["data"]
    secret = readme_secret_command()
    names = [*config, *(k for k in secret if k.startswith("IMGCLASS_"))]
    assert {k.removeprefix("IMGCLASS_").lower() for k in names} <= set(Settings.model_fields)
    Settings(**{k.removeprefix("IMGCLASS_").lower(): v for k, v in config.items()})  # valid
    ingress = one(resources, "Ingress")
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body.endswith("m")
    limit = int(config["IMGCLASS_MAX_UPLOAD_BYTES"])
    assert int(body[:-1]) * 2**20 == limit == Settings.model_fields["max_upload_bytes"].default
    retries = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-next-upstream"]
    assert "non_idempotent" not in retries
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ("Service", backend["name"]) in resources
    assert config["IMGCLASS_AUTO_MIGRATE"] == "false"  # the init container migrates
    (init,) = pod_spec(resources)["initContainers"]
    assert init["args"] == ["db", "upgrade"] and init["image"] == server(resources)["image"]


def test_hpa_pdb_and_service_select_the_server_pods(rendered):
    overlay, resources = rendered
    deployment = one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    bounds = (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    assert bounds == {"dev": (1, 2), "prod": (3, 12)}[overlay]
    assert deployment["spec"]["replicas"] == bounds[0]  # apply never fights the HPA's floor

    def selects(selector: dict, labels: dict) -> bool:
        return selector.items() <= labels.items()

    cron_pod = one(resources, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    for selector in (
        one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        resources[("Service", "imgclass")]["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selects(selector, pod_labels)
        assert not selects(selector, cron_pod["metadata"]["labels"]), "backup pods get traffic"


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(rendered):
    _overlay, resources = rendered
    uid, _, gid = dockerfile_stages()["runtime"].values("USER")[-1].partition(":")
    data_dir = runtime_env()["IMGCLASS_DATA_DIR"]
    cron = one(resources, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for spec in (pod_spec(resources), cron):
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (int(uid), int(gid))
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # Writable places on a read-only root: the data dir and /tmp (gunicorn, Python).
            assert {data_dir, "/tmp"} <= set(mounts)
            assert all("emptyDir" in volumes[mounts[p]] for p in (data_dir, "/tmp"))


def test_postgres_and_redis_are_external_services(rendered):
    _overlay, resources = rendered
    kinds = {kind for kind, _ in resources}
    assert not kinds & {"StatefulSet", "PersistentVolumeClaim"}
    for name in ("postgres", "redis"):
        service = resources[("Service", name)]
        assert service["spec"]["type"] == "ExternalName"
        assert re.fullmatch(
            r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)+", service["spec"]["externalName"]
        )
    config = one(resources, "ConfigMap")["data"]
    secret = readme_secret_command()
    assert config["IMGCLASS_REDIS_URL"].startswith("redis://redis:6379/")
    assert secret["IMGCLASS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in secret["IMGCLASS_DATABASE_URL"]


def parse_cli(args: list[str]) -> click.Context:
    """The context the `imgclass` command builds for ``args``: parsed as the image's
    entrypoint would parse them (a typo, a missing value or an unknown command raises
    click.UsageError), without running anything."""
    command, ctx, rest, name = main, None, list(args), "imgclass"
    while isinstance(command, click.Group):
        ctx = command.make_context(name, list(rest), parent=ctx)
        name, command, rest = command.resolve_command(ctx, rest)
    return command.make_context(name, rest, parent=ctx)


def test_backups_run_nightly_to_s3(rendered):
    _overlay, resources = rendered
    cron = one(resources, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server(resources)["image"]
    assert json.loads(dockerfile_stages()["runtime"].values("ENTRYPOINT")[-1]) == ["imgclass"]
    # The args are a real invocation of the image's entrypoint: `imgclass backup create`.
    ctx = parse_cli(container["args"])
    assert ctx.command is backup_create
    destination = ctx.params["destination"]
    assert destination.startswith("s3://")
    assert isinstance(open_store(destination, Settings()), S3Store)  # a valid bucket and prefix
    assert ctx.params["prune"], "the bucket would grow a backup a night, forever"
    # …of the database the servers use (PostgreSQL, backed up with pg_dump).
    env = {e["name"]: e for e in container["env"]}
    assert env["IMGCLASS_DATABASE_URL"] == next(
        e for e in server(resources)["env"] if e["name"] == "IMGCLASS_DATABASE_URL"
    )


def test_the_command_parser_refuses_what_the_entrypoint_would():
    for wrong in (["backup", "creat"], ["backup", "create", "--too", "s3://x-y/z"], ["backup"]):
        with pytest.raises(click.UsageError):
            parse_cli(wrong)


def test_overlays_pin_their_images(rendered):
    overlay, resources = rendered
    image = server(resources)["image"]
    repository, _, tag = image.rpartition(":")
    assert repository.endswith("/imgclass")
    assert tag == {"dev": "dev", "prod": "0.1.0"}[overlay]
    if overlay == "prod":
        assert one(resources, "Ingress")["spec"]["tls"][0]["secretName"]
