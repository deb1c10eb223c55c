"""``python -m engine devices``: list the CPU and every GPU PyTorch can use."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("devices", help="list the devices PyTorch can use here")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.cli import print_json
    from engine.devices import list_devices

    devices = list_devices()
    if args.json:
        print_json([d.to_dict() for d in devices])
    else:
        for d in devices:
            print(d.label)
    return 0
