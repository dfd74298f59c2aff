"""The footfall profile on a board: phones counted from a BLE scan, never their addresses.

    from veil import footfall
    footfall.main()          # what device/main.py runs at boot; returns on Ctrl-C

main() reads the optional config file /veil.json (veil.boardcfg, docs/footfall.md),
starts the pipeline through veil.app.start (keys and policy from esp32.NVS("veil"), the
message counter and the epsilon budget records at /veil.ctr and /veil.eps), then scans:
the IRQ handler puts each advertisement into a ring (veil.sources.ble_live), and the loop
drains it into the pipeline and closes windows on the clock (Pipeline.tick), whether or
not anything is heard. If anything is missing or wrong it prints why and returns to the
REPL: a refusing board sends nothing. Ctrl-C stops the scan and returns.
"""

import sys
import time

from veil import VeilError

CONFIG = "/veil.json"
STATE = ""  # app.start's records: STATE + "/veil.ctr" and STATE + "/veil.eps"


def serve(pipe, scanner, clock, poll_ms, until=None):
    """Drain sightings into `pipe` and close windows on `clock` until `until` (veil time).

    `until` None: forever. Per pass: read the clock, drain the ring (every sighting so
    far is older than that reading), then tick: a window whose end has passed closes.
    """
    while True:
        t = clock()
        try:
            scanner.drain(pipe.feed)
            if t >= 0:
                pipe.tick(t)
        except VeilError as e:  # a sample the pipeline refused: dropped, say so
            print("veil: sample dropped:", e)
        if until is not None and t >= until:
            return
        time.sleep_ms(poll_ms)


def main(config=CONFIG, nvs=None, ble=None, state=STATE):
    """The board's run: config, pipeline, scan, loop; returns after a refusal or Ctrl-C.

    Returns the pipeline it ran (None after a refusal). `nvs` and `ble` default to the
    board's esp32.NVS("veil") and bluetooth.BLE(); `state` is app.start's directory of
    the counter and budget records.
    """
    try:
        return _run(config, nvs, ble, state)
    except KeyboardInterrupt:
        print("veil: stopped")
        return None


def _run(config, nvs, ble, state):
    from veil import app
    from veil.sources.ble_live import Scanner, now

    # Code a counting board no longer needs leaves the heap (docs/footfall.md, "Memory"):
    # the sources package (the replay's registry; ble_live does not use it), and the
    # config module once it has done its work.
    _unload("veil.sources")
    try:
        from veil import boardcfg

        if nvs is None:
            import esp32

            nvs = esp32.NVS("veil")
        cfg, transport = boardcfg.setup(config, nvs, now)
    except (VeilError, OSError) as e:
        print("veil: refusing to send anything:", e)
        return None
    finally:
        _unload("veil.boardcfg")
    if ble is None:
        import bluetooth

        ble = bluetooth.BLE()
    s = cfg["scan"]
    scanner = Scanner(ble, s["ring"])  # its ring before the pipeline's many small blocks
    pipe = app.start(nvs, transport=transport, state=state)
    if pipe is None:
        return None  # app.start said why; nothing is sent
    if now() < 0:
        print("veil: the clock is not set: nothing is counted until it is")
    print("veil: footfall: scanning, reports over", cfg["transport"])
    try:
        scanner.start(s["interval_us"], s["window_us"])
        serve(pipe, scanner, now, s["poll_ms"])
    except KeyboardInterrupt:
        print("veil: stopped")
    finally:
        scanner.stop()
    return pipe


def _unload(name):
    # Forget a module (a later import loads it again), so the GC can free its bytecode.
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    try:
        delattr(sys.modules[pkg], attr)
    except (KeyError, AttributeError):
        pass
