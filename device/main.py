"""The board's boot entry: the footfall profile (veil.footfall, docs/footfall.md).

`edgeveil deploy` compiles this file into the current slot, and the loader's /main.py
imports it after boot.py, on every boot to the friendly REPL. It returns after a refusal
(printed on the console; nothing is sent) or a Ctrl-C, and the REPL takes over.
"""

from veil import footfall

footfall.main()
