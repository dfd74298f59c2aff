# micropython-lib style manifest: `mip install` or freeze the `veil` package into firmware.
metadata(version="0.1.0", description="edgeveil: anonymize and aggregate on the device")

package("veil")
