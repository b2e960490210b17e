"""Server configuration: one frozen object built once at start-up, handed to every child.

`load_config` reads a TOML file and refuses a bad one with a `ConfigError` that names the
file, the key and what was expected. `ServerConfig.to_json` / `from_json` carry the same object
into child processes through their spawn arguments; children never read files or the
environment themselves.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field

import orjson

from schooner.engine.core.policies import make_policy
from schooner.model_procs.loaders import FRAMEWORKS

INPUT_TYPE_ALIASES = {
    "bytes": "bytes", "byte": "bytes", "b": "bytes",
    "ints": "ints", "integers": "ints", "integer": "ints", "int": "ints", "i": "ints",
    "floats": "floats", "float": "floats", "f": "floats",
    "doubles": "doubles", "double": "doubles", "d": "doubles",
    "strings": "strings", "string": "strings", "str": "strings", "strs": "strings", "s": "strings",
}  # fmt: skip
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
MIB = 1024 * 1024
SPIN_US_DEFAULT = 300  # chosen side by side: README "Where the time goes"
SPIN_US_MAX = 1000  # a spinner sees its control socket only after the spin
V2_OUTPUT_TYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                   "FP16", "FP32", "FP64", "BF16", "BYTES")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names where and what was expected."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    version: str
    entry_point: str
    input_type: str
    input_shape: tuple[int, ...]
    max_batch_size: int = 64
    replicas: int = 1
    device: str | tuple[str, ...] = "cpu"  # "cpu", "cuda" (every visible GPU), "cuda:N", or a tuple of those
    input_device: str = "cpu"  # "gpu": the model gets its batch on the device (CuPy/torch); "cpu": numpy
    output_slot_nbytes: int = 4 * MIB
    init_args: dict = field(default_factory=dict)  # keyword arguments for the model class
    batch_size: int = -1  # > 0: fixed batch size; -1: adaptive (AIMD), as in Clipper
    batch_wait_timeout_micros: int = 0  # delayed batching
    aimd_additive_step: int = 2
    aimd_backoff_factor: float = 0.9
    aimd_target_fraction: float = 0.9
    output_type: str = ""  # V2 datatype of the answer (FP32, INT64, BYTES, ...); "" = learned
    output_shape: tuple[int, ...] = ()  # per query, without the batch dimension; -1 = any
    current: bool = True  # the version apps and `/v2/models/{name}` use (one per name)
    deleted: bool = False  # removed while serving: kept as a tombstone so indices stay stable
    gpus: tuple[int, ...] = ()  # set by the supervisor: the GPU (NVML index) of each replica

    def __post_init__(self) -> None:
        if isinstance(self.device, list):  # from JSON: a list of devices becomes a tuple
            object.__setattr__(self, "device", tuple(self.device))

    @property
    def input_width(self) -> int:
        return math.prod(self.input_shape) if self.input_shape else 1

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    input_type: str
    input_shape: tuple[int, ...]
    latency_slo_micros: int
    default_output: str
    models: tuple[str, ...]
    cache: bool = True
    policy: str = "single"  # single | exp3 | exp4 | epsilon_greedy | ucb1
    policy_params: dict = field(default_factory=dict)
    confidence_threshold: float = 0.0
    max_contexts: int = 10_000  # per-uid selection states kept (LRU)
    deleted: bool = False  # removed while serving (a tombstone: app indices never shift)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    models: tuple[ModelConfig, ...]
    apps: tuple[AppConfig, ...]
    host: str = "127.0.0.1"
    port: int = 1337
    frontends: int = 1
    max_body_nbytes: int = 16 * MIB
    submit_slots: int = 8
    submit_slot_nbytes: int = 4 * MIB
    response_slots: int = 8
    response_slot_nbytes: int = 4 * MIB
    cache_nbytes: int = 32 * MIB
    allow_client_shm: bool = False  # Triton's system shared memory extension (a trust boundary)
    data_dir: str = ""  # where selection-policy state is kept across restarts ("" = not kept)
    snapshot_interval_s: float = 5.0
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    # client limits, per frontend process (see README "Limits and failure behaviour")
    max_connections: int = 10_000  # more get 503 and are closed (also kept below RLIMIT_NOFILE)
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this
    body_timeout_s: float = 60.0  # its body within this once the headers are in
    keepalive_timeout_s: float = 60.0  # an idle connection is closed after this
    max_url_nbytes: int = 16 * 1024  # longer: 414
    max_header_nbytes: int = 64 * 1024  # all header lines together; more: 431
    # health
    model_stall_timeout_s: float = 10.0  # a replica holding a batch longer than this is not ready
    max_restarts: int = 5  # a role dying this often within restart_window_s stops the server
    restart_window_s: float = 60.0
    # management (the admin token is not here: children never see it)
    admin_host: str = "127.0.0.1"
    admin_port: int = 1338  # 0 picks a free one
    warm_versions: int = 1  # previous versions of a model whose processes stay up for a fast rollback
    # the hot path (README "Wake-ups, spinning and CPU placement")
    spin_us: int = SPIN_US_DEFAULT  # scheduler and models spin this long before sleeping (adaptive); 0: never
    frontend_cpus: tuple[int, ...] = ()  # CPUs the frontends run on; (): wherever the kernel puts them
    scheduler_cpus: tuple[int, ...] = ()
    model_cpus: tuple[int, ...] = ()  # CPU-device replicas (a GPU replica is pinned near its GPU)
    source: str = "<built-in>"
    python_path: tuple[str, ...] = field(default=())

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> ServerConfig:
        d = orjson.loads(data)
        d["models"] = tuple(
            ModelConfig(**{**m, "input_shape": tuple(m["input_shape"]), "output_shape": tuple(m["output_shape"]),
                           "gpus": tuple(m.get("gpus", ()))})
            for m in d["models"]
        )
        d["apps"] = tuple(
            AppConfig(**{**a, "input_shape": tuple(a["input_shape"]), "models": tuple(a["models"])})
            for a in d["apps"]
        )
        for key in ("python_path", "frontend_cpus", "scheduler_cpus", "model_cpus"):
            d[key] = tuple(d[key])
        return cls(**d)

    def model_index(self, name: str, version: str | None = None) -> int:
        """Index of the current version of model `name` (or of `version` when given)."""
        for i, m in enumerate(self.models):
            if m.name == name and not m.deleted and (m.current if version is None else m.version == version):
                return i
        raise KeyError(name if version is None else f"{name}:{version}")


# -- parsing --------------------------------------------------------------------------------


class _Table:
    """Typed access to one TOML table with error messages that say file, key and expectation."""

    def __init__(self, src: str, where: str, data: dict) -> None:
        self.src, self.where, self.data = src, where, data
        self.used: set[str] = set()

    def fail(self, key: str, expected: str, got: object = dataclasses.MISSING) -> ConfigError:
        shown = "" if got is dataclasses.MISSING else f", got {got!r}"
        return ConfigError(f"{self.src}: {self.where}.{key}: expected {expected}{shown}")

    def get(self, key, kind, expected, default=dataclasses.MISSING):
        self.used.add(key)
        if key not in self.data:
            if default is dataclasses.MISSING:
                raise self.fail(key, expected + " (required)")
            return default
        value = self.data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(key, expected, value)
        return value

    def name(self, key: str, pattern: re.Pattern, expected: str, default=dataclasses.MISSING):
        value = self.get(key, str, expected, default)
        if not pattern.match(value):
            raise self.fail(key, expected, value)
        return value

    def positive(self, key: str, default=dataclasses.MISSING, minimum: int = 1) -> int:
        expected = f"an integer >= {minimum}"
        value = self.get(key, int, expected, default)
        if value < minimum:
            raise self.fail(key, expected, value)
        return value

    def bounded(self, key: str, default: int, lo: int, hi: int) -> int:
        expected = f"an integer from {lo} to {hi}"
        value = self.get(key, int, expected, default)
        if not lo <= value <= hi:
            raise self.fail(key, expected, value)
        return value

    def cpus(self, key: str) -> tuple[int, ...]:
        expected = "a list of CPU numbers (integers >= 0), e.g. [1] or [0, 1]"
        value = self.get(key, list, expected, [])
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value):
            raise self.fail(key, expected, value)
        return tuple(sorted(set(value)))

    def seconds(self, key: str, default: float) -> float:
        expected = "a number of seconds > 0"
        value = self.get(key, (int, float), expected, default)
        if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
            raise self.fail(key, expected, value)
        return float(value)

    def input_type(self, key: str = "input_type") -> str:
        expected = "one of doubles, floats, ints, bytes, strings"
        value = self.get(key, str, expected)
        if value.lower() not in INPUT_TYPE_ALIASES:
            raise self.fail(key, expected, value)
        return INPUT_TYPE_ALIASES[value.lower()]

    def shape(self, input_type: str) -> tuple[int, ...]:
        expected = "a list of positive integers, e.g. [16] or [3, 32, 32]"
        if input_type in ("bytes", "strings"):
            value = self.get("input_shape", list, expected, [])
            if value:
                raise self.fail("input_shape", f"no shape for input_type {input_type}", value)
            return ()
        value = self.get("input_shape", list, expected)
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise self.fail("input_shape", expected, value)
        return tuple(value)

    def check_unknown(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(f"{self.src}: {self.where}: unknown key(s) {', '.join(extra)}")


_DEVICE_EXPECTED = "\"cpu\", \"cuda\" (every visible GPU), \"cuda:N\", or a list of \"cuda\"/\"cuda:N\""


def _device(t: _Table) -> str | tuple[str, ...]:
    value = t.get("device", (str, list), _DEVICE_EXPECTED, "cpu")
    entries = [value] if isinstance(value, str) else value
    if not entries or not all(isinstance(e, str) and re.fullmatch(r"cpu|cuda(:\d+)?", e) for e in entries):
        raise t.fail("device", _DEVICE_EXPECTED, value)
    if isinstance(value, list) and "cpu" in value:
        raise t.fail("device", "GPUs only in a device list (\"cpu\" stands alone)", value)
    return value if isinstance(value, str) else tuple(value)


def _input_device(t: _Table, input_type: str, device: object) -> str:
    """Where the model receives its batch: "cpu" (numpy view of the slot, the default for
    device = "cpu" and for bytes/strings) or "gpu" (on the device, the default otherwise)."""
    on_gpu = device != "cpu"
    numeric = input_type not in ("bytes", "strings")
    value = t.get("input_device", str, "\"cpu\" or \"gpu\"", "gpu" if on_gpu and numeric else "cpu")
    if value not in ("cpu", "gpu"):
        raise t.fail("input_device", "\"cpu\" or \"gpu\"", value)
    if value == "gpu" and not on_gpu:
        raise t.fail("input_device", "\"cpu\" for a model on device \"cpu\" (\"gpu\" needs device = \"cuda...\")", value)
    if value == "gpu" and not numeric:
        raise t.fail("input_device", f"\"cpu\" for input_type {input_type} (only numeric batches go to the GPU)", value)
    return value


def _entry_point(t: _Table) -> tuple[str, dict]:
    """(entry point, init_args): a class/object/function named `package.module:attr`, or a saved
    artifact given as `framework` + `model_path` (loaded by `schooner.model_procs.loaders`)."""
    init_args = t.get("init_args", dict, "a table of keyword arguments for the model class", {})
    framework = t.get("framework", str, f"one of {', '.join(FRAMEWORKS)}", "")
    if not framework:
        return t.name("entry_point", _ENTRY_POINT, "'package.module:attr' (or framework + model_path)"), init_args
    if framework not in FRAMEWORKS:
        raise t.fail("framework", f"one of {', '.join(FRAMEWORKS)}", framework)
    if "entry_point" in t.data:
        raise t.fail("entry_point", "no entry_point together with framework", t.data["entry_point"])
    path = t.get("model_path", str, "the path of the saved model")
    return FRAMEWORKS[framework], {**init_args, "path": path}


def parse_model(t: _Table) -> ModelConfig:
    """One model version from a [[models]] table (or an admin add_model body)."""
    itype = t.input_type()
    entry_point, init_args = _entry_point(t)
    m = ModelConfig(
        name=t.name("name", _DNS1123, "a DNS-1123 label (lowercase letters, digits, '-')"),
        version=str(t.get("version", (str, int), "a version string like \"1\"", "1")),
        entry_point=entry_point,
        input_type=itype,
        input_shape=t.shape(itype),
        max_batch_size=t.positive("max_batch_size", 64),
        replicas=t.positive("replicas", 1, minimum=0),
        device=_device(t),
        input_device=_input_device(t, itype, t.data.get("device", "cpu")),
        output_slot_nbytes=t.positive("output_slot_nbytes", 4 * MIB, minimum=4096),
        init_args=init_args,
        batch_size=t.get("batch_size", int, "-1 (adaptive) or a fixed batch size >= 1", -1),
        batch_wait_timeout_micros=t.positive("batch_wait_timeout_micros", 0, minimum=0),
        aimd_additive_step=t.positive("aimd_additive_step", 2),
        aimd_backoff_factor=float(t.get("aimd_backoff_factor", (int, float), "a number in (0, 1)", 0.9)),
        aimd_target_fraction=float(t.get("aimd_target_fraction", (int, float), "a number in (0, 1]", 0.9)),
        output_type=t.get("output_type", str, f"a V2 datatype ({', '.join(V2_OUTPUT_TYPES)})", ""),
        output_shape=tuple(t.get("output_shape", list, "a list of dimensions (-1: any), without the batch", [])),
        current=t.get("current", bool, "true or false (the version apps use)", False),
    )
    if m.output_type and m.output_type not in V2_OUTPUT_TYPES:
        raise t.fail("output_type", f"a V2 datatype ({', '.join(V2_OUTPUT_TYPES)})", m.output_type)
    if not all(isinstance(v, int) and not isinstance(v, bool) and (v > 0 or v == -1) for v in m.output_shape):
        raise t.fail("output_shape", "a list of positive integers or -1", list(m.output_shape))
    if m.output_shape and not m.output_type:
        raise t.fail("output_type", "a V2 datatype when output_shape is given")
    if m.batch_size == 0 or m.batch_size < -1:
        raise t.fail("batch_size", "-1 (adaptive) or a fixed batch size >= 1", m.batch_size)
    if not 0 < m.aimd_backoff_factor < 1:
        raise t.fail("aimd_backoff_factor", "a number in (0, 1)", m.aimd_backoff_factor)
    if not 0 < m.aimd_target_fraction <= 1:
        raise t.fail("aimd_target_fraction", "a number in (0, 1]", m.aimd_target_fraction)
    if not _VERSION.match(m.version):
        raise t.fail("version", "a label of letters, digits, '-', '_', '.' (no ':' or ',')", m.version)
    t.check_unknown()
    return m


def parse_app(t: _Table, models_by_name: dict[str, ModelConfig]) -> AppConfig:
    """One app from an [[apps]] table (or an admin add_app body); `models_by_name` holds the
    current version of every model it may link."""
    itype = t.input_type()
    linked = t.get("models", list, "a list of model names", [])
    default = t.get("default_output", (str, int, float), "a string (JSON text is embedded as JSON)", "null")
    a = AppConfig(
        name=t.name("name", _DNS1123, "a DNS-1123 label (lowercase letters, digits, '-')"),
        input_type=itype,
        input_shape=t.shape(itype),
        latency_slo_micros=t.positive("latency_slo_micros", 100_000),
        default_output=str(default),
        models=tuple(linked),
        cache=t.get("cache", bool, "true or false", True),
        policy=t.get("policy", str, "one of single, exp3, exp4, epsilon_greedy, ucb1",
                     "exp4" if len(linked) > 1 else "single"),
        policy_params=t.get("policy_params", dict, "a table of the policy's parameters", {}),
        confidence_threshold=float(t.get("confidence_threshold", (int, float), "a number in [0, 1]", 0.0)),
        max_contexts=t.positive("max_contexts", 10_000, minimum=0),
    )
    t.check_unknown()
    try:
        make_policy(a.policy, **a.policy_params)
    except (ValueError, TypeError) as e:
        raise t.fail("policy", f"a valid policy ({e})", a.policy) from None
    if not 0.0 <= a.confidence_threshold <= 1.0:
        raise t.fail("confidence_threshold", "a number in [0, 1]", a.confidence_threshold)
    check_links(a, models_by_name, t.fail)
    return a


def check_links(a: AppConfig, models_by_name: dict[str, ModelConfig], fail) -> None:
    """The rules an app's links obey; `fail(key, expected, got)` builds the error."""
    if a.policy == "single" and len(a.models) > 1:
        raise fail("policy", "a selection policy (exp3, exp4, epsilon_greedy, ucb1) for several models", "single")
    if len(set(a.models)) != len(a.models):
        raise fail("models", "distinct model names", list(a.models))
    for mname in a.models:
        m = models_by_name.get(mname)
        if m is None:
            raise fail("models", f"names of [[models]] ({', '.join(sorted(models_by_name)) or 'none defined'})", mname)
        if (m.input_type, m.input_shape) != (a.input_type, a.input_shape):
            raise fail(
                "input_type/input_shape",
                f"the linked model's {m.input_type}{list(m.input_shape)}",
                f"{a.input_type}{list(a.input_shape)}",
            )


def parse_config(data: dict, source: str = "<config>", allow_no_apps: bool = False, **overrides) -> ServerConfig:
    """Build a ServerConfig from parsed TOML; `overrides` (host, port, ...) win over the file."""
    top = _Table(source, "(top level)", data)
    server = _Table(source, "server", top.get("server", dict, "a [server] table", {}))
    model_tables = top.get("models", list, "an array of [[models]] tables", [])
    app_tables = top.get("apps", list, "an array of [[apps]] tables", [])
    top.check_unknown()

    models = []
    for i, raw in enumerate(model_tables):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: models[{i}]: expected a table")
        t = _Table(source, f"models[{i}]", raw)
        m = parse_model(t)
        if any(o.name == m.name and o.version == m.version for o in models):
            raise t.fail("version", f"a version of model {m.name} not declared before", m.version)
        if m.current and any(o.name == m.name and o.current for o in models):
            raise t.fail("current", f"one current version of model {m.name}", True)
        models.append(m)
    # a name with no version marked current: its last declared version is
    for name in {m.name for m in models}:
        versions = [i for i, m in enumerate(models) if m.name == name]
        if not any(models[i].current for i in versions):
            models[versions[-1]] = dataclasses.replace(models[versions[-1]], current=True)
    first_of = {}
    for m in models:
        o = first_of.setdefault(m.name, m)
        if (o.input_type, o.input_shape) != (m.input_type, m.input_shape):
            raise ConfigError(f"{source}: model {m.name}: every version takes the same input "
                              f"({o.input_type}{list(o.input_shape)} in version {o.version}, "
                              f"{m.input_type}{list(m.input_shape)} in version {m.version})")

    by_name = {m.name: m for m in models if m.current}
    apps = []
    for i, raw in enumerate(app_tables):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: apps[{i}]: expected a table")
        t = _Table(source, f"apps[{i}]", raw)
        a = parse_app(t, by_name)
        if any(o.name == a.name for o in apps):
            raise t.fail("name", "a name not used by another app", a.name)
        apps.append(a)
    if not apps and not allow_no_apps:
        raise ConfigError(f"{source}: expected at least one [[apps]] table")

    kw = dict(
        host=server.get("host", str, "a host address", "127.0.0.1"),
        port=server.positive("port", 1337, minimum=0),
        frontends=server.positive("frontends", 1),
        max_body_nbytes=server.positive("max_body_nbytes", 16 * MIB),
        submit_slot_nbytes=server.positive("submit_slot_nbytes", 4 * MIB, minimum=4096),
        response_slot_nbytes=server.positive("response_slot_nbytes", 4 * MIB, minimum=4096),
        cache_nbytes=server.positive("cache_nbytes", 32 * MIB, minimum=0),
        allow_client_shm=server.get("allow_client_shm", bool, "true or false", False),
        data_dir=server.get("data_dir", str, "a directory", ""),
        snapshot_interval_s=float(server.get("snapshot_interval_s", (int, float), "a number of seconds", 5.0)),
        ready_timeout_s=float(server.get("ready_timeout_s", (int, float), "a number of seconds", 120.0)),
        python_path=tuple(server.get("python_path", list, "a list of directories", [])),
        max_connections=server.positive("max_connections", 10_000),
        header_timeout_s=server.seconds("header_timeout_s", 10.0),
        body_timeout_s=server.seconds("body_timeout_s", 60.0),
        keepalive_timeout_s=server.seconds("keepalive_timeout_s", 60.0),
        max_url_nbytes=server.positive("max_url_nbytes", 16 * 1024, minimum=256),
        max_header_nbytes=server.positive("max_header_nbytes", 64 * 1024, minimum=1024),
        model_stall_timeout_s=server.seconds("model_stall_timeout_s", 10.0),
        max_restarts=server.positive("max_restarts", 5),
        restart_window_s=server.seconds("restart_window_s", 60.0),
        admin_host=server.get("admin_host", str, "a host address", "127.0.0.1"),
        admin_port=server.positive("admin_port", 1338, minimum=0),
        warm_versions=server.positive("warm_versions", 1, minimum=0),
        spin_us=server.bounded("spin_us", SPIN_US_DEFAULT, 0, SPIN_US_MAX),
        frontend_cpus=server.cpus("frontend_cpus"),
        scheduler_cpus=server.cpus("scheduler_cpus"),
        model_cpus=server.cpus("model_cpus"),
    )
    server.check_unknown()
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if kw["port"] > 65535:
        raise ConfigError(f"{source}: server.port: expected a port number <= 65535, got {kw['port']}")
    return ServerConfig(models=tuple(models), apps=tuple(apps), source=source, **kw)


def load_config(path: str, allow_no_apps: bool = False, **overrides) -> ServerConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, source=path, allow_no_apps=allow_no_apps, **overrides)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a query can be addressed: an app (Clipper, or a V2 model named like the app), or
    a model version directly (V2 `/v2/models/{model}[/versions/{v}]`: cache and batching
    apply, selection does not). The frontend and the scheduler both build this table from the
    same config, so a route index means the same thing in both processes. Route ids are
    interleaved -- app i is `2 * i`, model entry mi is `2 * mi + 1` -- so adding apps or model
    versions while serving never changes the meaning of an id a query in flight carries."""

    name: str
    model: int | None  # linked model (the first, for an ensemble), None for an app without one
    input_type: str
    input_shape: tuple[int, ...]
    latency_slo_micros: int
    default_output: str
    cache: bool
    is_app: bool
    models: tuple[int, ...] = ()  # every linked model
    policy: str = "single"
    policy_params: dict = field(default_factory=dict)
    confidence_threshold: float = 0.0
    max_contexts: int = 0


DIRECT_MODEL_SLO_MICROS = 1_000_000


def app_route(i: int) -> int:
    return 2 * i


def model_route(mi: int) -> int:
    return 2 * mi + 1


def routes(config: ServerConfig) -> list[Route | None]:
    """The route table, indexed by route id (`app_route`, `model_route`); None where none."""
    out: list[Route | None] = [None] * (2 * max(len(config.apps), len(config.models)))
    for i, a in enumerate(config.apps):
        if a.deleted:  # a tombstone: queries already sent get the default, and its id is never reused
            out[app_route(i)] = Route(a.name, None, a.input_type, a.input_shape, a.latency_slo_micros,
                                      a.default_output, False, True)
            continue
        out[app_route(i)] = Route(
            a.name, config.model_index(a.models[0]) if a.models else None, a.input_type, a.input_shape,
            a.latency_slo_micros, a.default_output, a.cache and config.cache_nbytes > 0, True,
            tuple(config.model_index(n) for n in a.models), a.policy, a.policy_params,
            a.confidence_threshold, a.max_contexts)
    for mi, m in enumerate(config.models):
        slos = [a.latency_slo_micros for a in config.apps if m.name in a.models and not a.deleted]
        out[model_route(mi)] = Route(m.name, mi, m.input_type, m.input_shape,
                                     min(slos) if slos else DIRECT_MODEL_SLO_MICROS,
                                     "null", config.cache_nbytes > 0, False, (mi,))
    return out
