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
    if not args.reset_registry:
        cfg, warnings = merge(cfg, store.load())
        for w in warnings:
            log.warning("%s", w)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    setup_logging("sweep", getattr(logging, args.log_level))
    removed = sweep_stale()
    print(f"removed {len(removed)} stale segment(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
