"""hello-python: the sample service Shipline delivers in `make demo`."""

VERSION = "1.0.0"
