# The virtual board's boot: what MicroPython's ESP32 port does before the REPL.
#
# Run by the board process as `micropython -X heapsize=N -i _vboot.py` with MICROPYPATH set
# to this directory and the board described in EDGEVEIL_VB_* environment variables. It
#   1. opens the flash file, the replay and the control pipe while the host's files are
#      still visible, and builds the emulated modules (esp32, machine, time, bluetooth,
#      network) into sys.modules under their board names;
#   2. unmounts the host's `/` (the unix VM mounts it) and mounts the board's littlefs
#      `vfs` partition there, formatting it first when blank, as the ESP32 port does, so
#      no client can ever see or delete a host file;
#   3. runs boot.py, then main.py unless the REPL is in raw mode (a soft reboot from the
#      raw REPL skips main.py on a board too) or boot.py failed (a Ctrl-C or an error in
#      it: the ESP32 port skips main.py then), and prints the ready mark the board
#      process strips before the VM's own REPL takes over.
import gc
import os
import sys

import vfs


class _Ctl:
    # The control pipe to the board process. MicroPython's unix files are unbuffered, and
    # flush() on a pipe raises EINVAL, so flush is a no-op here.
    def __init__(self, f):
        self.write = f.write

    def flush(self):
        pass


def _boot():
    env = os.getenv
    ctl = _Ctl(open(env("EDGEVEIL_VB_CTL"), "wb"))
    size = int(env("EDGEVEIL_VB_FLASH_SIZE"))
    flash_file = open(env("EDGEVEIL_VB_FLASH"), "r+b")
    replay_path = env("EDGEVEIL_VB_REPLAY")
    replay = open(replay_path) if replay_path else None

    import vbflash

    cfg = {
        "flash": vbflash.Flash(flash_file, size),
        "mac": bytes.fromhex(env("EDGEVEIL_VB_MAC")),
        "reset_cause": int(env("EDGEVEIL_VB_RESET_CAUSE")),
        "ctl": ctl,
        "replay": replay,
        "speed": int(env("EDGEVEIL_VB_SPEED")),
        "t0": int(env("EDGEVEIL_VB_T0")),
        "rtc_mem": bytes.fromhex(env("EDGEVEIL_VB_RTC_MEM") or ""),
    }
    import vbclock

    vbclock._init(cfg)
    vbclock._ctl = ctl
    sys.modules["time"] = vbclock
    sys.modules["utime"] = vbclock
    for name in ("esp32", "machine", "bluetooth", "network"):
        mod = __import__(name)
        mod._init(cfg)
        sys.modules[name] = mod
    machine_name = env("EDGEVEIL_VB_MACHINE")
    if machine_name:  # the chip, as firmware names it in sys.implementation._machine
        import vbsys

        vbsys.install(machine_name)

    esp32 = sys.modules["esp32"]
    part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
    vfs.umount("/")
    try:
        fs = vfs.VfsLfs2(part)
        fresh = False
    except OSError:
        vfs.VfsLfs2.mkfs(part)
        fs = vfs.VfsLfs2(part)
        fresh = True
    vfs.mount(fs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    if fresh:
        with open("boot.py", "w") as f:
            f.write("# This file is executed on every boot (including wake-boot from deepsleep)\n")
    # Leave user code the board's heap, not the emulation's allowance (see board.py). The
    # reserve is taken in 1 KiB pieces, first fit, so it fills the holes loading left and
    # the free heap stays in one piece at the top, as on a board after boot.
    gc.collect()
    target = int(env("EDGEVEIL_VB_HEAP_FREE"))
    reserve = []
    while gc.mem_free() - target > 1024:
        reserve.append(bytearray(1008))
    vbflash._reserved = reserve
    if gc.mem_free() < target - 1024:
        print(
            "vboard: warning: the emulated modules leave %d bytes less heap than the board's"
            % (target - gc.mem_free())
        )
    # The "firmware" is up: from here a Ctrl-C interrupts boot.py/main.py as on a board
    # (until now the board process held input back, so nothing above can be cut short).
    ctl.write(b"up\n")
    return env("EDGEVEIL_VB_MODE") == "raw"


def _run(name):
    # True if the file is missing or ran to its end; False after an exception (a Ctrl-C
    # included), which a board prints before it goes on.
    try:
        os.stat(name)
    except OSError:
        return True
    ctl = sys.modules["time"]._ctl
    try:
        with open(name) as f:
            code = compile(f.read(), name, "exec")
        ctl.write(b"run\n")  # a Ctrl-C may reach the VM now: it interrupts this file
        exec(code, globals())
        return True
    except KeyboardInterrupt as e:
        sys.print_exception(e)
    except Exception as e:  # noqa: BLE001 - a board prints the traceback and goes on
        sys.print_exception(e)
    finally:
        ctl.write(b"idle\n")
    return False


_KEEP = set(sys.modules)


def _soft_reset(sys=sys, gc=gc, keep=_KEEP):
    # Tell the board process the board's calendar time, so the next boot (and the replay)
    # continues from there instead of starting the replay again.
    machine = sys.modules.get("machine")
    if machine is not None:
        machine._state()  # the calendar time and RTC memory, which a soft reset keeps
    # A board's soft reset finalises every object on the heap (gc_sweep_all), which closes
    # files left open, e.g. `open('f','w').write(...)`; littlefs commits them then. The
    # unix VM exits without doing so, so do what the board does: drop everything user code
    # made, collect, and let the finalisers close the files.
    g = globals()
    for k in list(g):
        if k != "__name__":
            del g[k]
    for k in list(sys.modules):
        if k not in keep:
            del sys.modules[k]
    gc.collect()


sys.atexit(_soft_reset)
_raw = _boot()
_KEEP.update(sys.modules)
try:
    # As the ESP32 port's main.c: main.py runs only after a boot.py that did not fail. A
    # client's Ctrl-C that cut boot.py short must not be used up there while main.py,
    # which may never return, runs after it (mpremote sends just one).
    if _run("boot.py") and not _raw and os.getenv("EDGEVEIL_VB_SKIP_MAIN") != "1":
        _run("main.py")
    del _boot, _raw, _run
    gc.collect()
except KeyboardInterrupt:  # a Ctrl-C between the statements above: boot is over anyway
    pass
# The unix VM only handles SIGINT while it runs code: between this script's end and its
# REPL a Ctrl-C would kill it. Tell the board to hold input now, and stay interruptible a
# little longer so a Ctrl-C already on its way lands here, harmlessly.
try:
    sys.modules["time"]._ctl.write(b"end\n")
    sys.modules["time"]._rt.sleep_ms(50)
except KeyboardInterrupt:
    pass
sys.stdout.write("\x1b[vboard:ready]")
