"""The virtual board's `sys`: the VM's own, but naming the board's chip as firmware does.

On a board, `sys.implementation._machine` is MicroPython's board and MCU name, e.g.
"Generic ESP32S3 module with ESP32S3"; hosts read the chip from it (edgeveil provision
picks the board file that way). The unix VM says "linux [GCC ...] version" whatever board
it emulates. `install(machine)` puts a stand-in `sys` into sys.modules (as _vboot does for
`time`), so every later `import sys` sees the board's machine string and, for everything
else, the VM's own objects (the same stdin/stdout, modules, path and functions).

Not modelled: assigning `sys.ps1`/`sys.ps2` through it does not reach the VM's REPL.
"""


class _Implementation:
    def __repr__(self):
        fields = ("name", "version", "_machine", "_mpy", "_build", "_thread")
        shown = ["%s=%r" % (k, getattr(self, k)) for k in fields if hasattr(self, k)]
        return "(%s)" % ", ".join(shown)


class _Sys:
    pass


def install(machine):
    import sys

    real = sys.modules.get("sys", sys)
    impl = _Implementation()
    for name in dir(real.implementation):
        if not name.startswith("__"):
            setattr(impl, name, getattr(real.implementation, name))
    impl._machine = machine
    fake = _Sys()
    for name in dir(real):
        if not name.startswith("__"):
            setattr(fake, name, getattr(real, name))
    fake.implementation = impl
    fake.__name__ = "sys"
    sys.modules["sys"] = fake
    return fake
