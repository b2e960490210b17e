"""The `schooner` command line: `serve` (the supervisor) and `sweep` (stale shared memory).

Configuration is resolved here, once: flags win over the config file, which wins over the
defaults. The resulting `ServerConfig` is handed to every child in its spawn arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from schooner.engine.config import (
    AppConfig,
    ConfigError,
    ModelConfig,
    ServerConfig,
    load_config,
    parse_config,
)
from schooner.engine.registry import RegistryStore, merge, registry_path
from schooner.engine.spawn import setup_logging
from schooner.engine.supervisor import StartupError, Supervisor
from schooner.ipc.shm import sweep_stale

log = logging.getLogger("schooner")


def default_data_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "schooner")


def demo_config(data_dir: str, **overrides) -> ServerConfig:
    """The built-in demo: app `digits` answered by a classifier of scikit-learn's digits."""
    model = ModelConfig(
        name="digits", version="1", entry_point="schooner.model_procs.demo:DigitsModel",
        input_type="floats", input_shape=(64,), max_batch_size=64, replicas=1, device="cpu",
        output_slot_nbytes=1 << 20, init_args={"model_path": os.path.join(data_dir, "digits-logreg.pkl")},
    )
    app = AppConfig(name="digits", input_type="floats", input_shape=(64,), latency_slo_micros=100_000,
                    default_output="-1", models=("digits",))
    base = parse_config({"apps": [{"name": "x", "input_type": "floats", "input_shape": [1]}]}, "<built-in demo>", **overrides)
    import dataclasses

    return dataclasses.replace(base, models=(model,), apps=(app,))


def _demo_example(host: str, port: int) -> str:
    from sklearn.datasets import load_digits

    digits = load_digits()
    row = ",".join(str(int(v)) for v in digits.data[0])
    return (
        f"curl -s -X POST http://{host}:{port}/digits/predict -d '{{\"input\": [{row}]}}'\n"
        f"# expected output: {int(digits.target[0])}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="schooner", description="Low-latency prediction serving over shared memory.")
    p.add_argument("--version", action="version", version=f"schooner {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the apps and models of a config file (or the built-in demo)",
                       description="Start the supervisor, frontends, scheduler and model processes.")
    s.add_argument("--config", metavar="FILE.toml", help="apps and models to serve (default: the built-in digits demo)")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="query port (default 1337; 0 picks a free one)")
    s.add_argument("--frontends", type=int, help="frontend processes sharing the port (default 1)")
    s.add_argument("--allow-client-shm", action="store_true", default=None,
                   help="enable Triton's system shared memory extension (clients' /dev/shm regions are read and written)")
    s.add_argument("--data-dir", default=None, help=f"where the demo's trained model and the selection policies' state are kept (default {default_data_dir()})")
    s.add_argument("--admin-port", type=int, help="admin API port (default 1338; 0 picks a free one)")
    s.add_argument("--admin-host", help="admin API address (default 127.0.0.1; another needs a token)")
    s.add_argument("--admin-token", default=None,
                   help="bearer token the admin API requires (default: $SCHOONER_ADMIN_TOKEN, else none on 127.0.0.1)")
    s.add_argument("--reset-registry", action="store_true",
                   help="forget the changes made through the admin API and start from --config alone")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _admin_verbs(sub)
    w = sub.add_parser("sweep", help="remove shared-memory segments left by dead schooner instances")
    w.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def serve(args: argparse.Namespace) -> int:
    setup_logging("supervisor", getattr(logging, args.log_level))
    if args.frontends is not None and args.frontends < 1:
        print("schooner: --frontends: expected an integer >= 1", file=sys.stderr)
        return 2
    overrides = dict(host=args.host, port=args.port, frontends=args.frontends, allow_client_shm=args.allow_client_shm,
                     admin_port=args.admin_port, admin_host=args.admin_host)
    try:
        if args.config:
            cfg = load_config(args.config, allow_no_apps=True, **overrides)
        else:
            cfg = demo_config(args.data_dir or default_data_dir(), **overrides)
    except ConfigError as e:
        print(f"schooner: bad configuration: {e}", file=sys.stderr)
        return 2
    if args.data_dir or not cfg.data_dir:
        import dataclasses

        cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(args.data_dir or default_data_dir()))
    token = args.admin_token or os.environ.get("SCHOONER_ADMIN_TOKEN") or None
    if cfg.admin_host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"schooner: the admin API on {cfg.admin_host} needs a token (--admin-token or SCHOONER_ADMIN_TOKEN): "
              "deploying a model runs its code", file=sys.stderr)
        return 2
    store = RegistryStore(registry_path(cfg.data_dir, cfg.source))
    file_cfg = cfg
    if not args.reset_registry:
        cfg, warnings = merge(cfg, store.load(), store.load_seed())
        for w in warnings:
            log.warning("%s", w)
    store.seed = file_cfg
    sup = Supervisor(cfg, admin_token=token, registry=store)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    signal.signal(signal.SIGHUP, sup.request_stop)  # a closed terminal: drain and stop, never die silently
    try:
        sup.start()
    except StartupError as e:
        log.error("%s", e)
        sup.close()
        return 1
    except BaseException:
        sup.close()
        raise
    store.save(sup.cfg)
    host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
    apps = ", ".join(a.name for a in cfg.apps if not a.deleted) or "no app yet"
    print(f"Schooner is serving {apps} at http://{host}:{sup.port} (instance {sup.instance})", flush=True)
    ahost = sup.admin.host if ":" not in sup.admin.host else f"[{sup.admin.host}]"
    print(f"Admin API at http://{ahost}:{sup.admin.port}/admin/ (Clipper's management endpoints)", flush=True)
    if not args.config:
        print("Try it:\n" + _demo_example(host, sup.port), flush=True)
    return sup.run()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("schooner")
    except Exception:
        return "0+unknown"


def _admin_verbs(sub) -> None:
    """Verbs that drive a running server through its admin API."""

    def verb(name, help_text):
        v = sub.add_parser(name, help=help_text, description=help_text)
        v.add_argument("--admin", default=os.environ.get("SCHOONER_ADMIN_URL", "http://127.0.0.1:1338"),
                       help="the server's admin URL (default $SCHOONER_ADMIN_URL, else http://127.0.0.1:1338)")
        v.add_argument("--token", default=None, help="bearer token (default $SCHOONER_ADMIN_TOKEN)")
        return v

    d = verb("deploy", "deploy a model version (current once its replicas are ready)")
    d.add_argument("name")
    d.add_argument("version")
    d.add_argument("--entry-point", help="package.module:attr (or --framework and --model-path)")
    d.add_argument("--framework", choices=["torchscript", "sklearn", "onnx"])
    d.add_argument("--model-path")
    d.add_argument("--input-type", required=True, help="doubles | floats | ints | bytes | strings")
    d.add_argument("--input-shape", help="comma-separated, e.g. 16 or 3,32,32")
    d.add_argument("--replicas", type=int)
    d.add_argument("--max-batch-size", type=int)
    d.add_argument("--device")
    d.add_argument("--init-args", help="a JSON object of keyword arguments for the model class")
    verb("models", "list model versions (current ones marked)")
    verb("apps", "list applications and their linked models")
    a = verb("add-app", "register an application")
    a.add_argument("name")
    a.add_argument("--input-type", required=True)
    a.add_argument("--input-shape")
    a.add_argument("--default-output", default="null")
    a.add_argument("--slo-micros", type=int, default=100_000)
    ln = verb("link", "link a model to an application")
    ln.add_argument("app")
    ln.add_argument("model")
    sv = verb("set-version", "make a version current (roll back or forward)")
    sv.add_argument("name")
    sv.add_argument("version")
    sc = verb("scale", "set a model's replica count (0 parks it)")
    sc.add_argument("name")
    sc.add_argument("replicas", type=int)
    verb("status", "ping the server and list its model processes")


def _shape(text: str | None) -> list[int] | None:
    return None if not text else [int(x) for x in text.split(",") if x.strip()]


def admin_verb(args: argparse.Namespace) -> int:
    import json

    from schooner.engine.client import AdminCallError, AdminClient

    client = AdminClient(args.admin, args.token)
    try:
        if args.command == "deploy":
            settings = {k: v for k, v in dict(input_shape=_shape(args.input_shape), replicas=args.replicas,
                                               max_batch_size=args.max_batch_size, device=args.device,
                                               framework=args.framework, model_path=args.model_path).items()
                        if v is not None}
            if args.init_args:
                settings["init_args"] = json.loads(args.init_args)
            out = client.deploy_model(args.name, args.version, args.input_type, entry_point=args.entry_point, **settings)
        elif args.command == "models":
            for m in client.get_all_models(verbose=True):
                mark = "*" if m["is_current_version"] else " "
                print(f"{mark} {m['model_name']}:{m['model_version']}  replicas={m['replicas']}  {m['entry_point']}")
            return 0
        elif args.command == "apps":
            for a in client.get_all_apps(verbose=True):
                print(f"{a['name']}  {a['input_type']}{a['input_shape']}  slo={a['latency_slo_micros']}us  "
                      f"models={','.join(a['linked_models']) or '-'}")
            return 0
        elif args.command == "add-app":
            extra = {"input_shape": _shape(args.input_shape)} if args.input_shape else {}
            out = client.register_application(args.name, args.input_type, args.default_output, args.slo_micros, **extra)
        elif args.command == "link":
            out = client.link_model_to_app(args.app, args.model)
        elif args.command == "set-version":
            out = client.set_model_version(args.name, args.version)
        elif args.command == "scale":
            out = client.set_num_replicas(args.name, args.replicas)
        else:  # status
            print(f"{client.url}: {client.ping()}")
            for r in client.get_all_model_replicas(verbose=True):
                state = "ready" if r["ready"] else "starting"
                print(f"  {r['model_name']}:{r['model_version']}:{r['replica_id']}  pid={r['pid']}  {state}")
            return 0
    except AdminCallError as e:
        print(f"schooner {args.command}: {e.status} {e.error}: {e.cause}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"schooner {args.command}: cannot reach the admin API at {client.url}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command != "sweep":
        return admin_verb(args)
    setup_logging("sweep", getattr(logging, args.log_level))
    removed = sweep_stale()
    print(f"removed {len(removed)} stale segment(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
