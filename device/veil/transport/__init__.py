"""Transports: where egress hands protected messages. Each has `send(msg) -> None`.

Transports register here, so a board that leaves one out pays nothing for it:

    from veil.transport import get
    t = get("serial")()
"""

_FACTORIES = {}


def register(name, factory):
    _FACTORIES[name] = factory


def get(name):
    if name not in _FACTORIES:
        # Import on first use: `veil.transport.serial` registers itself.
        __import__("veil.transport." + name)
    return _FACTORIES[name]
