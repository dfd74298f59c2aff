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
      RegistryError                 the device registry is missing, corrupt or locked, the
                                    master key is wrong or its file too open, unknown device
      FlashError                    writing firmware failed or was refused on one port (busy,
                                    no chip answering, wrong chip, verify failed)
      FleetError                    some boards of a many-port run failed (each is named)
      LinkError                     a board's REPL could not be reached or its code raised
                                    (port missing or busy, no REPL answer, device traceback)
      DeployError                   deploy refused or could not complete (mpy version or
                                    arch mismatch, a file that does not verify)
      CaptureError                  a capture file is missing or has no header, or a capture
                                    source (serial port, MQTT broker, dump file) cannot be
                                    opened or was lost
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


class RegistryError(EdgeveilError):
    """The device registry refused: missing or corrupt database, wrong master key, a key
    file others can read, an unknown device or a status change that is not allowed."""


class FlashError(EdgeveilError):
    """Writing firmware to the board on one port failed or was refused; the message names
    the port and why: busy, no such port, no chip answering, wrong chip, verify failed."""


class FleetError(EdgeveilError):
    """A run over many ports (`edgeveil.fleet.run_many`) finished with some boards failed;
    the message names them. The others completed."""


class LinkError(EdgeveilError):
    """The board on a port could not be used: the port is missing or busy, no MicroPython
    REPL answered, the connection was lost, or code raised on the device (its traceback is
    in the message and in `traceback`)."""

    def __init__(self, message: str, port: str | None = None, traceback: str | None = None):
        super().__init__(message)
        self.port = port
        self.traceback = traceback


class DeployError(EdgeveilError):
    """`deploy` refused or could not complete on one port: the device's .mpy version or
    architecture does not match, or a written file did not verify. The board keeps running
    the version it had."""


class CaptureError(EdgeveilError):
    """A capture file is missing or its first line is not a capture header, or a capture
    source could not be used: the serial port cannot be opened or was lost, the MQTT broker
    is unreachable, refused the subscription or went away, the dump file cannot be read.
    Records already written stay in the capture file."""
