"""Reading docker-compose.yml and the Dockerfile the way Compose and Docker do (${VAR}
interpolation, commands, health checks, durations), for the tests that check them."""

import re
import shlex

import yaml

from tests.helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# What an operator exports before `docker compose up`: only the required variable.
OPERATOR_ENV = {"SECRET_KEY": "compose-test-secret-key-not-used-anywhere"}

BACKENDS = ("postgres", "redis")
APP_SERVICES = ("migrate", "web", "worker-inference", "worker-training", "beat")
LONG_RUNNING_APP_SERVICES = ("web", "worker-inference", "worker-training", "beat")
WORKERS = ("worker-inference", "worker-training")
CELERY_SERVICES = ("worker-inference", "worker-training", "beat")


class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR:+a}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        expr = _BRACED.fullmatch(match.group("braced"))
        assert expr, f"bad interpolation {match.group(0)!r}"
        name, op, arg = expr.group("name"), expr.group("op"), expr.group("arg")
        current = env.get(name)
        if op is None:
            return current or ""
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise MissingVariable(f"{name}: {arg}")
            return current
        if op == ":+":
            return arg if current else ""
        return arg if current is not None else ""  # "+"

    return _VARIABLE.sub(substitute, value)


def load_compose(env: dict[str, str]) -> dict:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option(argv: list[str], *names: str) -> str:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"none of {names} in {argv}")


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items() if v is not None}


def parse_duration(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = []
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#"):
            continue
        lines.append(raw)
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result
