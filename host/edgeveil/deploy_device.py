"""What `edgeveil deploy` puts on the board besides the compiled tree, and the helpers it
runs there.

- `BOOT_PY` (/boot.py): puts the current slot (/app/current names it) first on sys.path,
  at every boot and soft reset, so the raw REPL (mpremote exec, edgeveil's links) imports
  the deployed code too.
- `MAIN_PY` (/main.py): runs the tree's own `main` module (device/main.py, compiled into
  the slot) when it has one; a board runs main.py only after a boot to the friendly REPL.
- `HELPERS`: MicroPython helpers sent at the start of each deploy (hashing, listing,
  copying, atomic replace, the manifest), with indentation squeezed to one space a level.

All of it runs on MicroPython, never on the host.
"""

import re

BOOT_PY = b"""\
# edgeveil: put the deployed code's current slot first on sys.path.
# Written by `edgeveil deploy`; it replaces this file on every deploy.
def _edgeveil_slot():
    import sys
    try:
        with open("/app/current") as f:
            s = f.read()
    except OSError:
        return
    if s in ("a", "b") and "/app/" + s not in sys.path:
        sys.path.insert(0, "/app/" + s)


_edgeveil_slot()
del _edgeveil_slot
"""

MAIN_PY = b"""\
# edgeveil: run the deployed code's entry point (main.py of the device tree) from the
# current slot, which boot.py put on sys.path. Written by `edgeveil deploy`.
import sys

if sys.path and sys.path[0].startswith("/app/"):
    try:
        import os

        os.stat(sys.path[0] + "/main.mpy")
    except OSError:
        pass
    else:
        import main  # noqa: F401  (the slot's main.mpy, not this file)
"""

LOADER = {"/boot.py": BOOT_PY, "/main.py": MAIN_PY}

# Device-side helpers, sent once per deploy (indentation squeezed to one space a level
# below). Every path goes in through repr(). `_H` remembers each file's hash from this
# session, so the manifest is written from what the device itself hashed.
_HELPERS_SRC = """\
import os, hashlib, binascii
_H = {}
def _hf(p):
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while 1:
            n = f.readinto(b)
            if not n:
                break
            h.update(b if n == 512 else b[:n])
    d = _H[p] = binascii.hexlify(h.digest()).decode()
    return d
def _kind(p):
    try:
        return 'd' if os.stat(p)[0] & 0x4000 else 'f'
    except OSError:
        return None
def _walk(d, pre, out):
    for e in os.ilistdir(d):
        if e[1] & 0x4000:
            _walk(d + '/' + e[0], pre + e[0] + '/', out)
        else:
            out.append(pre + e[0])
    return out
def _ls(d, tag, fresh=None):
    for r in _walk(d, '', []):
        p = d + '/' + r
        if fresh is None or r in fresh or p not in _H:
            print('f', tag, repr(r), _hf(p))
        else:
            print('f', tag, repr(r), '=')
def _txt(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
def _fh(p):
    return _hf(p) if _kind(p) == 'f' else None
def _mh(p):
    try:
        import json
        with open(p) as f:
            return json.load(f)['code_hash']
    except Exception:
        return None
def _state():
    import gc
    gc.collect()
    print('cur', repr(_txt('/app/current')))
    for s in 'ab':
        if _kind('/app/' + s) == 'd':
            print('slot', s)
            _ls('/app/' + s, s)
        print('manifest', s, repr(_mh('/app/' + s + '.json')))
    for p in ('/boot.py', '/main.py'):
        print('file', p, _fh(p))
def _mkdirs(p):
    q = ''
    for s in p.split('/'):
        if s:
            q += '/' + s
            if _kind(q) != 'd':
                os.mkdir(q)
def _rm(p):
    k = _kind(p)
    if k == 'd':
        for e in list(os.ilistdir(p)):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    elif k == 'f':
        os.remove(p)
def _prune(d):
    n = 0
    for e in list(os.ilistdir(d)):
        if e[1] & 0x4000 and _prune(d + '/' + e[0]):
            os.rmdir(d + '/' + e[0])
        else:
            n += 1
    return n == 0
def _cp(a, b):
    buf = bytearray(512)
    with open(a, 'rb') as s:
        with open(b, 'wb') as d:
            while 1:
                n = s.readinto(buf)
                if not n:
                    break
                d.write(buf if n == 512 else buf[:n])
def _put(p, data):
    with open(p + '.tmp', 'wb') as f:
        f.write(data)
    try:
        os.rename(p + '.tmp', p)
    except OSError:
        _rm(p)
        os.rename(p + '.tmp', p)
    if hasattr(os, 'sync'):
        os.sync()
def _mf(d, meta):
    import json
    meta['files'] = {r: _H.get(d + '/' + r) or _hf(d + '/' + r) for r in _walk(d, '', [])}
    _put(d + '.json', json.dumps(meta).encode())
"""
HELPERS = re.sub(r"(?m)^((?:    )+)", lambda m: " " * (len(m.group(1)) // 4), _HELPERS_SRC)
