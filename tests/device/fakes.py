# Fakes for device tests: stand-ins for what a test cannot have (a UART to read back).


class SinkTransport:
    """A transport that keeps every message it is sent, in order."""

    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(bytes(msg))
