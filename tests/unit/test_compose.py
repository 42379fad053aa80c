"""The deployment files, checked without a Docker engine: docker-compose.yml against the
Compose specification and against the app (services, topics, settings), .env.example,
the Dockerfile against pyproject.toml, and .dockerignore.

The topic job's script is run with bash against a stub ``kafka-topics.sh``.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import posixpath
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from outbox_app.registry import default_registry
from outbox_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
PYPROJECT_PATH = ROOT / "pyproject.toml"
SHARED_SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared" / "compose-spec.json"
VENDORED_SCHEMA_PATH = ROOT / "tests" / "data" / "compose-spec.json"

# What mysqlclient needs to build, and to run (any one of each group).
MYSQLCLIENT_BUILD_NEEDS = {
    "a C compiler": {"build-essential", "gcc"},
    "pkg-config": {"pkg-config", "pkgconf"},
    "the client headers": {"default-libmysqlclient-dev", "libmariadb-dev", "libmysqlclient-dev"},
}
MYSQLCLIENT_RUNTIME_LIBS = {
    "libmariadb3",
    "libmysqlclient21",
    "libmysqlclient24",
    "default-libmysqlclient-dev",
    "libmariadb-dev",
}
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|_PWD$|TOKEN|SECRET", re.IGNORECASE)

# -- Compose interpolation (``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR:?e}``, ...) --
_TEMPLATE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<braced>[^}]*)\}|(?P<invalid>))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """What Docker Compose makes of one string value, given the variables in ``env``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"] or "")
        if braced is None:
            raise ValueError(f"invalid interpolation at {match.group(0)!r} in {text!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        if op is None:
            return value or ""
        if op in (":-", "-"):
            return value if (value if op == ":-" else value is not None) else arg
        if op in (":+", "+"):
            return arg if (value if op == ":+" else value is not None) else ""
        if not (value if op == ":?" else value is not None):
            raise MissingVariable(f"{name}: {arg}")
        return str(value)

    return _TEMPLATE.sub(substitute, text)


def variable_names(text: str) -> set[str]:
    names = set()
    for match in _TEMPLATE.finditer(text):
        if match["named"]:
            names.add(match["named"])
        elif match["braced"] and (braced := _BRACED.fullmatch(match["braced"])):
            names.add(braced["name"])
    return names


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string value in a YAML document, with its path (keys are not interpolated)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, Mapping):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


# -- the files -------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: expected NAME=value, got {line!r}"
        values[name.strip()] = value.strip().strip("'\"")
    return values


@functools.cache
def compose_raw() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_PATH.read_text())
    assert isinstance(doc, dict), "docker-compose.yml must be a YAML mapping"
    return doc


@functools.cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE_PATH)


@functools.cache
def compose() -> dict[str, Any]:
    """The compose file as Docker Compose sees it with a .env made from .env.example."""
    return resolve(compose_raw(), env_example())


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def workers(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in doc["services"].items()
        if "OUTBOX_SERVICES" in environment(service)
    }


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else list(value)


def registry_services() -> tuple[str, ...]:
    """Services whose handlers live in the ``handlers`` package. The default registry is
    shared by the whole test run, where other tests may load their own handler modules."""
    default_registry.load_modules(["handlers"])
    services = tuple(
        service
        for service in default_registry.services
        if any(
            (spec := default_registry.handler_for(event_type)) is not None
            and spec.func.__module__.startswith("handlers.")
            for event_type in default_registry.event_types(service)
        )
    )
    assert services, "the handlers package registers no service"
    return services


def broker_addresses(broker_url: str) -> list[str]:
    assert broker_url.startswith("kafka://"), f"broker URL {broker_url!r} is not kafka://..."
    return [part.strip() for part in re.split("[,;]", broker_url[len("kafka://") :])]


def advertised(kafka: Mapping[str, Any]) -> set[str]:
    listeners = environment(kafka).get("KAFKA_ADVERTISED_LISTENERS", "")
    return {item.split("://", 1)[1] for item in listeners.split(",") if "://" in item}


def published_ports(service: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs, from short or long port syntax."""
    pairs = []
    for port in service.get("ports") or []:
        if isinstance(port, Mapping):
            pairs.append((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {port!r} is not published on a fixed host port"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


# -- Compose file: syntax and specification -------------------------------------------------
def schema_path() -> Path:
    return SHARED_SCHEMA_PATH if SHARED_SCHEMA_PATH.is_file() else VENDORED_SCHEMA_PATH


def _meta_id(uri: str) -> str:
    return uri.replace("https://", "http://", 1).rstrip("#")


def test_compose_file_parses_with_services_and_volumes():
    doc = compose_raw()
    assert isinstance(doc.get("services"), dict) and doc["services"], "no services defined"
    assert isinstance(doc.get("volumes"), dict), "no top-level volumes: section"


def test_compose_file_validates_against_the_compose_specification():
    schema = json.loads(schema_path().read_text())
    declared = schema.get("$schema", "")
    # The spec declares https://json-schema.org/draft-07/schema; jsonschema knows its
    # meta-schemas by their http:// ids, and would silently fall back to the latest draft.
    cls = validator_for(schema, default=None) or validator_for(
        {"$schema": _meta_id(declared)}, default=None
    )
    assert cls is not None, f"no jsonschema validator for $schema {declared!r}"
    assert _meta_id(cls.META_SCHEMA["$id"]) == _meta_id(declared), (
        f"{cls.__name__} does not implement {declared}"
    )
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml breaks the Compose specification:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


@pytest.mark.skipif(not SHARED_SCHEMA_PATH.is_file(), reason="no shared compose-spec.json")
def test_vendored_compose_schema_is_the_shared_one():
    assert VENDORED_SCHEMA_PATH.read_bytes() == SHARED_SCHEMA_PATH.read_bytes(), (
        "tests/data/compose-spec.json differs from ../shared/compose-spec.json: copy it again"
    )


def test_every_dollar_sign_is_a_valid_interpolation_or_escaped():
    bad = []
    for path, value in strings(compose_raw()):
        try:
            interpolate(value, {name: "x" for name in variable_names(value)})
        except ValueError as exc:
            bad.append(f"{path}: {exc} (write $$ for a literal $)")
    assert not bad, "\n".join(bad)


# -- .env.example and secrets -----------------------------------------------------------
def test_env_example_provides_every_variable_the_compose_file_uses():
    used = set().union(*(variable_names(v) for _, v in strings(compose_raw())))
    provided = set(env_example())
    assert used - provided == set(), f".env.example lacks {sorted(used - provided)}"
    assert provided - used == set(), f".env.example sets unused {sorted(provided - used)}"
    for name in ("MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "OUTBOX_ADMIN_TOKEN"):
        assert name in provided, f".env.example must set {name}"


def test_env_example_secrets_are_obvious_placeholders():
    for name, value in env_example().items():
        if SECRET_KEY.search(name) or name.endswith("_URL"):
            assert "change-me" in value, f"{name}={value!r} in .env.example is not a placeholder"


def test_required_variables_stop_compose_when_missing():
    with pytest.raises(MissingVariable, match="MYSQL_PASSWORD"):
        resolve(compose_raw(), {k: v for k, v in env_example().items() if k != "MYSQL_PASSWORD"})


def test_no_literal_secrets_in_the_compose_file():
    reference = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}")
    problems = []
    for path, value in strings(compose_raw()):
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and not reference.fullmatch(value):
            problems.append(f"{path} = {value!r}")
        if "://" in value:
            userinfo = value.split("://", 1)[1].split("@", 1)
            if len(userinfo) == 2 and ":" in userinfo[0]:
                password = userinfo[0].split(":", 1)[1]
                if not reference.fullmatch(password):
                    problems.append(f"{path}: password in URL {value!r}")
        for m in re.finditer(r"(?:PASSWORD|PWD|TOKEN)\s*=\s*\"?([^\"\s]+)", value):
            if not m.group(1).startswith("$"):
                problems.append(f"{path}: literal secret {m.group(0)!r}")
        for secret in (v for k, v in env_example().items() if SECRET_KEY.search(k)):
            if secret in value:
                problems.append(f"{path}: contains the .env.example value {secret!r}")
    assert not problems, "secrets must come from .env as ${...}:\n" + "\n".join(problems)


# -- workers --------------------------------------------------------------------------
def test_each_service_has_exactly_one_worker_and_each_worker_one_service():
    owned: dict[str, list[str]] = {}
    for name, service in workers(compose()).items():
        services = [s.strip() for s in environment(service)["OUTBOX_SERVICES"].split(",")]
        assert len(services) == 1 and services[0] != "all", (
            f"{name} owns {services}: a worker here owns exactly one service"
        )
        assert name == "worker-" + services[0].replace("_", "-"), (
            f"{name} owns {services[0]!r}: name it worker-{services[0].replace('_', '-')}"
        )
        owned.setdefault(services[0], []).append(name)
    expected = set(registry_services())
    assert set(owned) == expected, (
        f"services without a worker: {sorted(expected - set(owned))}; "
        f"workers for unknown services: {sorted(set(owned) - expected)}"
    )
    assert all(len(names) == 1 for names in owned.values()), f"shared services: {owned}"


@pytest.mark.parametrize("service", registry_services())
def test_worker_settings_parse_and_run_the_console_script(service):
    name = "worker-" + service.replace("_", "-")
    worker = compose()["services"].get(name)
    assert worker is not None, f"no {name} service in docker-compose.yml"
    settings = Settings.from_env(environment(worker))
    assert settings.services == (service,)
    assert settings.web_host == "0.0.0.0", f"{name}: the web view must listen beyond loopback"
    assert argv(worker.get("command")) == ["outbox-app", "worker"], f"{name}: wrong command"
    build = worker.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context, f"{name} is not built from this repository"
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE_PATH, f"{name}: wrong Dockerfile"


@pytest.mark.parametrize("service", registry_services())
def test_worker_database_is_the_mysql_service_it_waits_for(service):
    doc = compose()
    name = "worker-" + service.replace("_", "-")
    worker = doc["services"][name]
    url = make_url(environment(worker)["OUTBOX_DATABASE_URL"])
    assert url.drivername == "mysql+mysqldb", f"{name}: use mysqlclient (mysql+mysqldb://)"
    assert url.host in doc["services"], f"{name}: database host {url.host!r} is no service"
    assert depends_on(worker).get(url.host) == "service_healthy", (
        f"{name} must depend on {url.host} with condition service_healthy"
    )
    mysql = environment(doc["services"][url.host])
    assert (url.port or 3306) == 3306
    assert (url.username, url.password, url.database) == (
        mysql["MYSQL_USER"],
        mysql["MYSQL_PASSWORD"],
        mysql["MYSQL_DATABASE"],
    ), f"{name}: user, password or database differ from what {url.host} creates"


@pytest.mark.parametrize("service", registry_services())
def test_worker_broker_is_the_advertised_kafka_listener(service):
    doc = compose()
    name = "worker-" + service.replace("_", "-")
    worker = doc["services"][name]
    deps = depends_on(worker)
    for address in broker_addresses(environment(worker)["OUTBOX_BROKER_URL"]):
        host = address.rsplit(":", 1)[0]
        assert host in doc["services"], f"{name}: broker host {host!r} is no service"
        assert address in advertised(doc["services"][host]), (
            f"{name}: {address} is not an advertised listener of {host}; clients would "
            f"be sent to {sorted(advertised(doc['services'][host]))}"
        )
        assert deps.get(host) == "service_healthy", f"{name} does not wait for {host} to be healthy"


def test_web_ports_are_distinct_and_reach_the_web_view():
    seen: dict[int, str] = {}
    for name, service in compose()["services"].items():
        pairs = published_ports(service)
        if name in workers(compose()):
            web_port = Settings.from_env(environment(service)).web_port
            assert [target for _, target in pairs] == [web_port], (
                f"{name} must publish exactly its web port {web_port}, got {pairs}"
            )
        for host_port, _ in pairs:
            assert host_port not in seen, f"host port {host_port}: {seen[host_port]} and {name}"
            seen[host_port] = name


def test_notification_worker_gets_the_webhook():
    from handlers.notification import WEBHOOK_ENV

    raw = environment(compose_raw()["services"]["worker-notification"])
    assert raw.get(WEBHOOK_ENV, "").startswith("${NOTIFICATION_WEBHOOK_URL"), (
        f"worker-notification must set {WEBHOOK_ENV} from NOTIFICATION_WEBHOOK_URL"
    )
    others = [n for n, s in workers(compose()).items() if WEBHOOK_ENV in environment(s)]
    assert others == ["worker-notification"], f"{WEBHOOK_ENV} set on {others}"


# -- dependencies, health, data ------------------------------------------------------------
def test_health_conditions_have_health_checks_and_jobs_do_not_restart():
    services = compose()["services"]
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", (
                    f"{target} is a one-shot job: a restart policy would rerun it forever"
                )


def test_restart_policies_are_ones_compose_knows():
    # The specification types restart as any string; Compose rejects anything else at run time.
    policy = re.compile(r"no|always|unless-stopped|on-failure(:\d+)?")
    for name, service in compose()["services"].items():
        restart = service.get("restart", "no")
        assert policy.fullmatch(restart), f"{name}: unknown restart policy {restart!r}"


def test_mysql_and_kafka_health_checks_test_the_real_endpoints():
    services = compose_raw()["services"]
    mysql = " ".join(argv(services["mysql"]["healthcheck"]["test"]))
    assert "mysqladmin ping" in mysql and "-h 127.0.0.1" in mysql, (
        "ping MySQL over TCP: the entrypoint's first-run server listens on the socket only"
    )
    kafka = " ".join(argv(services["kafka"]["healthcheck"]["test"]))
    assert re.search(r"kafka-(topics|broker-api-versions)\.sh", kafka), kafka
    assert "--bootstrap-server" in kafka


def test_mysql_is_utf8mb4():
    command = argv(compose()["services"]["mysql"].get("command"))
    assert "--character-set-server=utf8mb4" in command
    assert "--collation-server=utf8mb4_unicode_ci" in command


def test_kafka_runs_as_a_single_kraft_node():
    env = environment(compose()["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols), f"listeners without a protocol: {listeners}"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners, f"no {controller} listener in {listeners}"
    voter_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == env["KAFKA_NODE_ID"], "the only voter must be this node"
    assert voter.rsplit(":", 1)[1] == listeners[controller].rsplit(":", 1)[1]
    for setting in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(setting) == "1", f"{setting} must be 1 on a single node"
    assert env.get("CLUSTER_ID"), "CLUSTER_ID must be fixed so the volume stays usable"


def test_data_lives_on_named_volumes():
    doc = compose()
    declared = set(doc["volumes"])
    data_dirs = {
        "mysql": "/var/lib/mysql",
        "kafka": environment(doc["services"]["kafka"]).get("KAFKA_LOG_DIRS"),
    }
    mounted: dict[str, set[str]] = {}
    for name, service in doc["services"].items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, Mapping):
                kind, source, target = volume.get("type"), volume.get("source"), volume["target"]
            else:
                source, _, rest = str(volume).partition(":")
                target = rest.split(":")[0] or source
                kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            assert kind == "volume", f"{name}: {volume!r} is a bind mount, use a named volume"
            assert source in declared, f"{name}: volume {source!r} not declared in volumes:"
            mounted.setdefault(name, set()).add(target)
    for name, data_dir in data_dirs.items():
        assert data_dir in mounted.get(name, set()), f"{name} keeps {data_dir} off its volume"
    unused = declared - {
        str(v.get("source") if isinstance(v, Mapping) else str(v).split(":")[0])
        for s in doc["services"].values()
        for v in s.get("volumes") or []
    }
    assert not unused, f"declared but unused volumes: {sorted(unused)}"


# -- topics --------------------------------------------------------------------------------
def test_kafka_is_the_version_the_test_suite_runs():
    from outbox_app.devtools.kafka import kafka_version

    image = compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}", image


def test_workers_create_the_topics_and_the_broker_does_not():
    doc = compose()
    kafka = environment(doc["services"]["kafka"])
    assert kafka.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", (
        "a stray produce must not create a topic with the broker's default partitions"
    )
    creators = [
        n for n, s in doc["services"].items() if any("--create" in v for _, v in strings(s))
    ]
    assert creators == [], f"the workers create the topics; also created by {creators}"
    settings = {Settings.from_env(environment(w)) for w in workers(doc).values()}
    partitions = {s.topic_partitions for s in settings}
    replication = {s.topic_replication for s in settings}
    assert len(partitions) == 1 and len(replication) == 1, (partitions, replication)
    # auto (0) is the brokers' count here, or an explicit factor one node can hold
    assert replication <= {0, 1}, replication


# -- Dockerfile -------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str
    workdir: str


def parse_dockerfile(text: str) -> list[Instruction]:
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a line continuation"
    instructions, stage, workdir = [], -1, "/"
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage, workdir = stage + 1, "/"
        elif keyword == "WORKDIR":
            workdir = posixpath.join(workdir, args.strip())
        instructions.append(Instruction(stage, keyword, args.strip(), workdir))
    return instructions


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args!r}"
    return list(json.loads(args))


def shell_commands(
    instructions: list[Instruction], tool: str
) -> list[tuple[Instruction, list[str]]]:
    """Each ``tool ...`` command inside RUN instructions, as (instruction, arguments)."""
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for part in re.split(r"&&|;|\|\|", ins.args):
            words = shlex.split(part)
            for i in range(len(words) - 1):
                if words[i : i + 2] == tool.split():
                    found.append((ins, words[i + 2 :]))
    return found


def positional(words: list[str]) -> list[str]:
    return [w for w in words if not w.startswith("-")]


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    return tuple(parse_dockerfile(DOCKERFILE_PATH.read_text()))


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT_PATH.read_text())


def package_dirs() -> list[str]:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    dirs = sorted({pattern.rstrip("*").rstrip(".").split(".")[0] for pattern in include})
    for name in dirs:
        assert (ROOT / name).is_dir(), f"pyproject includes {name}*, but there is no {name}/"
    return dirs


def pip_install() -> tuple[Instruction, list[str]]:
    installs = shell_commands(list(dockerfile()), "pip install")
    assert len(installs) == 1, f"expected one `pip install .`, found {len(installs)}"
    return installs[0]


def copied_paths(stage: int) -> dict[str, str]:
    """Repository path -> where COPY puts it, for the stage's COPY/ADD from the context."""
    placed = {}
    for ins in dockerfile():
        if ins.stage != stage or ins.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        *sources, dest = positional(words)
        dest_dir = posixpath.join(ins.workdir, dest)
        assert len(sources) == 1 or dest.endswith("/"), f"{ins.args}: dest must end with /"
        for source in sources:
            source = posixpath.normpath(source)
            if (ROOT / source).is_dir() or not dest.endswith("/"):
                # A directory's contents land in dest itself, not in dest/<name>.
                placed[source] = posixpath.normpath(dest_dir)
            else:
                placed[source] = posixpath.normpath(posixpath.join(dest_dir, source))
    return placed


def test_dockerfile_base_image_meets_requires_python():
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    images = [ins.args.split()[0] for ins in dockerfile() if ins.keyword == "FROM"]
    assert images, "no FROM in the Dockerfile"
    for image in images:
        match = re.fullmatch(r"python:(\d+\.\d+)[-\w.]*", image)
        assert match, f"base image {image!r} is not an official python:X.Y image"
        assert match.group(1) in requires, f"{image} does not satisfy requires-python {requires}"


def test_dockerfile_installs_the_project_as_pyproject_declares_it():
    ins, words = pip_install()
    assert positional(words) == [".[worker,mysql]"], (
        f"install the project with the worker and mysql extras, got {words}"
    )
    extras = pyproject()["project"]["optional-dependencies"]
    assert {"worker", "mysql"} <= set(extras), sorted(extras)
    placed = copied_paths(ins.stage)
    wanted = ["pyproject.toml", pyproject()["project"]["readme"], *package_dirs()]
    for path in wanted:
        assert placed.get(path) == posixpath.join(ins.workdir, path), (
            f"{path} must be copied to {posixpath.join(ins.workdir, path)} before "
            f"`pip install .` runs there; it goes to {placed.get(path)}"
        )


def test_dockerfile_installs_what_mysqlclient_needs():
    assert any(
        dep.lower().startswith("mysqlclient")
        for dep in pyproject()["project"]["optional-dependencies"]["mysql"]
    )
    install_stage = pip_install()[0].stage
    final_stage = dockerfile()[-1].stage
    packages: dict[int, set[str]] = {}
    for ins, words in shell_commands(list(dockerfile()), "apt-get install"):
        packages.setdefault(ins.stage, set()).update(positional(words))
    for need, choices in MYSQLCLIENT_BUILD_NEEDS.items():
        assert packages.get(install_stage, set()) & choices, (
            f"mysqlclient is built without {need}: install one of {sorted(choices)}"
        )
    if final_stage != install_stage:
        assert packages.get(final_stage, set()) & MYSQLCLIENT_RUNTIME_LIBS, (
            "the final stage lacks the MySQL client library mysqlclient links against"
        )


def test_dockerfile_final_stage_runs_the_console_script_as_non_root():
    final = [ins for ins in dockerfile() if ins.stage == dockerfile()[-1].stage]
    scripts = pyproject()["project"]["scripts"]
    cmd = exec_form(next(ins.args for ins in reversed(final) if ins.keyword == "CMD"))
    assert cmd == ["outbox-app", "worker"] and cmd[0] in scripts, f"CMD {cmd} vs {scripts}"
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    exposed = {p for ins in final if ins.keyword == "EXPOSE" for p in ins.args.split()}
    assert str(Settings().web_port) in exposed, f"EXPOSE {Settings().web_port}, got {exposed}"
    health = next((ins.args for ins in final if ins.keyword == "HEALTHCHECK"), "")
    check = exec_form(health.split("CMD", 1)[1].strip()) if "CMD" in health else []
    assert check[:2] == ["python", "-c"] and "urllib.request" in check[2], health
    assert "http://127.0.0.1:" in check[2] and "OUTBOX_WEB_PORT" in check[2], health
    if dockerfile()[-1].stage != pip_install()[0].stage:
        copied = [shlex.split(ins.args) for ins in final if ins.keyword == "COPY"]
        venvs = [positional(w)[-1] for w in copied if any(x.startswith("--from") for x in w)]
        path = " ".join(ins.args for ins in final if ins.keyword == "ENV" and "PATH=" in ins.args)
        assert any(f"{venv.rstrip('/')}/bin" in path for venv in venvs), (
            "the final stage must copy the installed environment and put its bin/ on PATH"
        )


def test_dockerignore_keeps_the_build_context_small_and_secret_free():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE_PATH.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").strip("/")
            if any(fnmatch.fnmatch(c, body) for c in candidates):
                result = not negate
        return result

    for path in (".env", ".venv", ".git", "tests", ".mypy_cache", "outbox_app/__pycache__"):
        assert ignored(path), f".dockerignore must exclude {path}"
    for path in copied_paths(pip_install()[0].stage):
        assert not ignored(path), f".dockerignore excludes {path}, which the Dockerfile copies"
