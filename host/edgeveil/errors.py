"""The error tree. Every error edgeveil raises on purpose is an `EdgeveilError`.

`main()` turns them into ``edgeveil: message`` on stderr and the exit code below; anything
else is a bug in edgeveil and gets a traceback.

    EdgeveilError          exit 2   not our bug: bad input, missing tool, refused operation
      BoardError                    a board file is malformed or names an unknown board
      VMError                       the MicroPython VM could not run or failed
      DecodeError                   a frame, CBOR item or COSE message is malformed
      CryptoError                   decryption or authentication failed
      VBoardError                   the virtual board cannot do that (bad flash file, bad access)
      ImageError                    flash contents (firmware image, partition table,
                                    filesystem image) are malformed or for another chip
"""


class EdgeveilError(Exception):
    """Base of all errors edgeveil raises on purpose."""

    exit_code = 2


class BoardError(EdgeveilError):
    """A board file is malformed or names an unknown board."""


class VMError(EdgeveilError):
    """The MicroPython VM could not be started or the code in it failed."""


class DecodeError(EdgeveilError):
    """Bytes that should be a frame, CBOR item or COSE message are not."""


class CryptoError(EdgeveilError):
    """Decryption or authentication failed (wrong key, bad tag, tampered message)."""


class ImageError(EdgeveilError):
    """Flash contents (a firmware image, partition table or filesystem image) are malformed
    or were made for another chip."""


class VBoardError(EdgeveilError):
    """The virtual board cannot do what was asked (bad flash file, out-of-range access)."""
